"""``make bench``: every benchmark, each printing its own table."""

from benchmarks import train_overhead

if __name__ == "__main__":
    __import__("benchmarks.near_duplicates", fromlist=["main"]).main([])
    train_overhead.main([])
    __import__("benchmarks.tuning_asha", fromlist=["main"]).main([])
    __import__("benchmarks.search_strategies", fromlist=["main"]).main([])
    __import__("benchmarks.api_latency", fromlist=["main"]).main([])
    __import__("benchmarks.metrics_scrape", fromlist=["main"]).main([])
    __import__("benchmarks.lifecycle", fromlist=["main"]).main([])
    __import__("benchmarks.mlflow_overhead", fromlist=["main"]).main([])
    __import__("benchmarks.predict_latency", fromlist=["main"]).main([])
    __import__("benchmarks.bulk_predict", fromlist=["main"]).main([])
    __import__("benchmarks.two_nodes", fromlist=["main"]).main([])
    __import__("benchmarks.data_scale", fromlist=["main"]).main([])
    __import__("benchmarks.model_quality", fromlist=["main"]).main([])
    __import__("benchmarks.label_next", fromlist=["main"]).main([])
    __import__("benchmarks.demo", fromlist=["main"]).main([])
