"""The embedded long-video world: rendered haystack videos with needle events and QA records."""
