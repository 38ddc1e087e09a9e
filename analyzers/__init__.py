"""Pure analysis core: frames in, HTTP transactions out.

Nothing in this package opens files or sockets, starts threads or reads clocks; every function
takes bytes and capture timestamps and returns events, so all of it can be tested by feeding bytes.
"""
