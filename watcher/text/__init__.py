"""What the watcher's own messages quote from outside, and how often they say it: outside text
escaped to printable ASCII (escape), the lines about packets whose analysis raised (faults). Both
commands use them: `read` (watcher/read/) and the service (watcher/run/)."""
