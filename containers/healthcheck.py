"""
Container HEALTHCHECK: exit 0 when C{HEALTH_URL} (the daemon's health
endpoint inside the container) answers 2xx within 2 s, else 1 with one line.
No shell or curl is needed in the image.
"""

import os
import sys
import urllib.request

url = os.environ.get("HEALTH_URL", "http://127.0.0.1:8080/health")
try:
    with urllib.request.urlopen(url, timeout=2) as response:
        ok = 200 <= response.status < 300
except OSError as e:
    sys.stderr.write(f"unhealthy: {url}: {e}\n")
    sys.exit(1)
sys.exit(0 if ok else 1)
