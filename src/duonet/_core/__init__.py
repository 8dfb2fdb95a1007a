"""The async core: the only package of duonet that does I/O."""
