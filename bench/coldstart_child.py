"""Child process for the cold-start and idle-memory rows: start the GUI the way ``run_gui`` does
(without loading a model), print ``shown <seconds>`` once the window is shown and painted, then
``rss <bytes> <engine processes>`` and exit. QUANTDESK_HOME must point at an empty folder."""

import time

T0 = time.perf_counter()

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    from PySide6.QtWidgets import QApplication

    from app import APP_NAME
    from app.ui.app import create_window, setup_logging

    setup_logging()
    app = QApplication(sys.argv)
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    window = create_window()
    window.show()
    for _ in range(3):
        app.processEvents()
    print(f"shown {time.perf_counter() - T0:.4f}", flush=True)

    import psutil

    me = psutil.Process()
    children = me.children(recursive=True)
    rss = me.memory_info().rss + sum(c.memory_info().rss for c in children)
    print(f"rss {rss} {len(children)}", flush=True)
    window.bridge.shutdown()
    window.store.close()


if __name__ == "__main__":
    main()
