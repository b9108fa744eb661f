"""DIM: a distributed instant-messaging system on Twisted."""
