"""The Qt-free core: everything the product does, used by the CLI, the GUI and the tests."""
