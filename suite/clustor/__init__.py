"""
Clustor, the partition substrate under CEPtra: the control-plane server
(state file, feeds, reload), the feed client nodes use to follow it, and a
node's placement view.
"""

__all__: list[str] = []
