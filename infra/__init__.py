"""The edges: the Kafka broker and clients, ClickHouse, the artifact store, model loading."""
