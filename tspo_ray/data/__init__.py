"""Record schema and JSONL IO."""
from tspo_ray.data.records import QARecord, RecordError, read_records, write_jsonl_atomic

__all__ = ["QARecord", "RecordError", "read_records", "write_jsonl_atomic"]
