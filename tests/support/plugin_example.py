"""The Massive plugin README's example, as it sits in a MarketStore config (mkts.yml)."""

PLUGIN_EXAMPLE = """\
root_directory: /project/data/mktsdb
listen_host: ""
listen_port: 15993
grpc_listen_port: 15995
log_level: info
stop_grace_period: 0
wal_rotate_interval: 5
stale_threshold: 5
enable_add: true
triggers:
  - module: ondiskagg.so
    on: "*/1Min/OHLCV"
    config:
      destinations: [5Min, 15Min, 1H, 1D]
bgworkers:
  - module: gdaxfeeder.so
    name: GdaxFetcher
    config:
      symbols: [BTC]
  - module: massive.so
    name: Massive
    config:
      api_key: your_api_key
      ws_server: wss://socket.massive.com
      data_types: ["bars", "trades"]
      symbols:
        - AAPL
        - SPY
      bar_frequencies: ["1Min", "1D"]
      query_start:
        1Min: "2024-01-01"
        1D: "2020-01-01"
        trades: "2024-06-01"
"""


