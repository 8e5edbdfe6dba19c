"""Ray Serve keyframe selection: CLIP + temporal agent behind an HTTP API (schema, access rules, cache, app, client)."""
