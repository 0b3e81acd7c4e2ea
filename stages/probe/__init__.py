"""The probe stage: ``core`` measures media (no Ray), ``stage`` maps it over samples parts."""
from __future__ import annotations

from stages.probe.core import MediaInfo, ProbeError, probe_image, probe_media, probe_table, probe_video

__all__ = ["MediaInfo", "ProbeError", "probe_image", "probe_media", "probe_table", "probe_video"]
