"""QuantDesk: run and quantize local language models."""

__version__ = "0.1.0"
APP_NAME = "QuantDesk"
