"""Deployable output of a plan: per server a ``vllm serve`` command, a Compose file, Kubernetes
manifests and the router's ``routing.json`` (issue 16, section 2); an HTML report (section 4).

Sits above the planner (it reads a ``SolveResult``) and under the CLI. PyYAML is imported on first use.
"""

from ..lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "export_plan": ".export", "ExportManifest": ".export", "ServerSpec": ".export",
    "load_adapter_paths": ".export", "check_export_dir": ".export", "routing": ".export",
    "render_report": ".report", "write_report": ".report"})

__all__ = ["export_plan", "ExportManifest", "ServerSpec", "load_adapter_paths", "check_export_dir", "routing",
           "render_report", "write_report"]
