"""A full disk under one directory, for the disk-full tests (a tmpfs needs root).

The tests put this directory on ``PYTHONPATH``, so every Python process of the job (the launcher
and each Beam worker) imports this module at start-up. With ``SHARDFORGE_DISKFULL_DIR`` set, a
process may write ``SHARDFORGE_DISKFULL_BYTES`` bytes to files it opens under that directory;
the write past them raises ``OSError(ENOSPC)``, as a full filesystem does.
"""

import os

if os.environ.get("SHARDFORGE_DISKFULL_DIR"):
    import builtins
    import errno

    _root = os.path.realpath(os.environ["SHARDFORGE_DISKFULL_DIR"]) + os.sep
    _left = [int(os.environ.get("SHARDFORGE_DISKFULL_BYTES", "0"))]
    _open = builtins.open

    class _OnFullDisk:
        """A file whose writes count against the bytes left."""

        def __init__(self, f):
            self._f = f

        def write(self, data):
            n = len(data.encode()) if isinstance(data, str) else memoryview(data).nbytes
            if n > _left[0]:
                _left[0] = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            _left[0] -= n
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    def _open_on_full_disk(file, mode="r", *args, **kwargs):
        f = _open(file, mode, *args, **kwargs)
        writes = any(c in mode for c in "wxa+")
        if writes and isinstance(file, (str, os.PathLike)) and os.path.realpath(
                os.fspath(file)).startswith(_root):
            return _OnFullDisk(f)
        return f

    builtins.open = _open_on_full_disk
