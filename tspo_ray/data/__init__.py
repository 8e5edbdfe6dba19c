"""Records, the benchmark and TSPO-10K formats, exports, FeatureItem and the haystack builder."""
from tspo_ray.data.records import QARecord, RecordError, read_records

__all__ = ["QARecord", "RecordError", "read_records"]
