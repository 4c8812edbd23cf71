"""Service-time profiles per (model version, pool): offline sweeps, files, and the online estimate."""

from tierserve.profiler.profile import BatchTiming, Profile, load_profile, profile_path, save_profile
from tierserve.profiler.sweep import sweep

__all__ = ["BatchTiming", "Profile", "load_profile", "profile_path", "save_profile", "sweep"]
