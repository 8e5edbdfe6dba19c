"""A small HTTP client of the keyframe-selection service.

    from tspo_ray.serve.client import SelectClient
    with SelectClient("http://127.0.0.1:8000", token=open(".../serve_token").read().strip()) as c:
        sel = c.select("video_0001.mp4", "When does the red star appear?", 8, method="agent")
"""
from __future__ import annotations

from typing import Any

import httpx


class ServiceError(RuntimeError):
    """A 4xx/5xx answer: carries the status, the error kind and the service's message."""

    def __init__(self, status: int, kind: str, message: str):
        super().__init__(f"HTTP {status} {kind}: {message}")
        self.status, self.kind, self.message = status, kind, message


class SelectClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", timeout_s: float = 60.0, token: str | None = None):
        """token: the service's bearer token, when it requires one."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, headers=headers)

    def _check(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            try:
                body = resp.json()
                kind, message = body.get("error", "error"), body.get("message", resp.text)
            except ValueError:
                kind, message = "error", resp.text
            raise ServiceError(resp.status_code, kind, message)
        return resp.json()

    def select(self, video: str, question: str, num_frames: int, method: str = "agent", **options: Any) -> dict:
        """POST /select; options: candidate_fps, max_candidates, return_frames."""
        payload = {"video": video, "question": question, "num_frames": num_frames, "method": method, **options}
        return self._check(self._http.post("/select", json=payload))

    def info(self) -> dict:
        return self._check(self._http.get("/"))

    def healthy(self) -> bool:
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "SelectClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
