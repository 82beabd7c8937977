"""The Qt-free core: everything the product does, used by the CLI, the GUI and the tests."""

import os as _os

if _os.environ.get("QUANTDESK_PARENT_FD"):  # a child of the app: die with it (app.core.proc.launch)

    def _watch_parent(fd: int) -> None:
        """The app holds the write end of this pipe for as long as it lives; when it dies, even by
        SIGKILL, the kernel closes it, the read returns end-of-file, and this child ends too."""
        try:
            while _os.read(fd, 64):
                pass
        except OSError:
            pass
        _os._exit(70)

    def _start_watch() -> None:
        import threading

        try:
            fd = int(_os.environ.pop("QUANTDESK_PARENT_FD"))
            _os.fstat(fd)
        except (ValueError, OSError):
            return
        threading.Thread(target=_watch_parent, args=(fd,), name="parent-watch", daemon=True).start()

    _start_watch()
