"""
HTTP pieces shared by every daemon.

  - C{interfaces}: L{IHealth}, what C{/readyz} asks.
  - C{health}: L{HealthReport}, C{/healthz} and C{/readyz} resources.
  - C{metrics}: C{/metrics} from the daemon's own registry, and the
    seconds-unit name guard.
  - C{errors}: JSON error bodies (C{jsonError}) and JSON 404s.
  - C{limits}: L{LimitedSite}, body (413) and header (431) limits.
  - C{sse}: L{SSEHub}, bounded server-sent events.
  - C{endpoint}: loopback-only checks for admin endpoint strings.
  - C{admin}: the admin resource tree and its listening service.
  - C{client}: L{collectBody}, an HTTP client's answer read within a limit.
"""

__all__: list[str] = []
