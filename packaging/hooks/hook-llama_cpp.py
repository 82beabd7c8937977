# PyInstaller does not find llama.cpp's shared libraries by itself (llama-cpp-python #1475):
# llama_cpp loads lib/libllama.so & co. with ctypes at import. Collect them where it looks for
# them (llama_cpp/lib next to the package), and its chat-format data files. libggml-rpc is among them
# (libggml needs it): the RPC worker and client (app/core/rpc) reach it through ggml's registry.
from PyInstaller.utils.hooks import collect_data_files, collect_dynamic_libs

binaries = collect_dynamic_libs("llama_cpp")
datas = collect_data_files("llama_cpp")
hiddenimports = ["llama_cpp.llama_chat_format", "llama_cpp.llama_grammar"]
