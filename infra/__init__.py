"""The edges: the Kafka broker and clients, ClickHouse, the artifact store, model loading."""

from infra.library_logs import route_library_noise

# Before any library is imported through us: bitsandbytes logs its CPU-kernel warning at import.
route_library_noise()
