"""The object store and the node's cache: ``storage`` (S3/MinIO or a folder), ``artifacts``
(every key the services write), ``fetch`` (data sets and weights into the cache),
``decoded_cache`` (data sets decoded once into shards)."""
