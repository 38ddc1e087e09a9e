"""Capture files on disk become frames: pcap/pcapng records, inputs (files, directories, stdin,
gzip), the spool of rotating files, tailing the file tcpdump is writing, inotify, and starting and
supervising tcpdump itself. Nothing here knows TCP or HTTP."""
