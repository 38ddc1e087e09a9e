"""`pcapwatch read`: capture files in, JSON lines out, serially or split over worker processes."""
