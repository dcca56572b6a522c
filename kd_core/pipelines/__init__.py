"""Multi-model distillation methods as pipelines over stored runs (issue 10): TAKD's chain
of assistants, BAN's generations and DML's peers. Each stage or peer is an ordinary run
whose config carries a PipelineLink; this package sits above the engine and the recorder."""

from kd_core.pipelines.ban import Ensemble, ban
from kd_core.pipelines.common import PipelineResult, pipeline_runs
from kd_core.pipelines.dml import dml, dml_losses
from kd_core.pipelines.takd import takd

__all__ = ["Ensemble", "PipelineResult", "ban", "dml", "dml_losses", "pipeline_runs", "takd"]
