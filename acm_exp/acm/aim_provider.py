"""AIM's coefficient provider: the base model's input importance on the calibration texts (cached; the
same capture pass as ACM's) -> a relaxation factor per input channel of every weight it covers."""

from __future__ import annotations

import logging

from acm_exp.acm.provider import (
    CalibratedProvider,
    CoefficientPlan,
    CoefficientRequest,
    calibration_manifest,
    select_calibration,
)
from acm_exp.merge_parameters import TiedEmbedding

log = logging.getLogger("acm_exp")


class AIMProvider(CalibratedProvider):
    name = "aim"

    def plan(self, request: CoefficientRequest) -> CoefficientPlan:
        from acm_exp.acm.importance import compute_input_importance, weight_factors
        from acm_exp.merge import Adjustment
        from acm_exp.merge.checkpoint import EMBEDDING_NAME, LM_HEAD_NAME, open_checkpoint
        from acm_exp.merge.inputs import writes_tied_head

        cfg = request.cfg
        calibration = select_calibration(cfg, request.run_dir)
        # The same capture settings (device, dtype, cache) as ACM: an ACM run's capture pass over the
        # same base and calibration already stored this importance.
        importance = compute_input_importance(
            request.model_dirs[0],
            calibration.texts,
            device=cfg.acm.device,
            max_memory=cfg.acm.max_memory,
            offload_dir=cfg.acm.offload_dir,
            dtype=cfg.acm.dtype,
            max_tokens=calibration.max_tokens,
            cache_dir=cfg.acm.cache_dir or cfg.cache_dir,
            trust_remote_code=cfg.model_pair.trust_remote_code,
        )
        allow_pickle = cfg.model_pair.allow_pickle
        with open_checkpoint(request.model_dirs[0], allow_pickle=allow_pickle) as base:
            names = [*importance.importance, EMBEDDING_NAME]
            shapes = {name: tuple(base.info(name).shape) for name in names if base.has(name)}
            base_tied = base.tied_embeddings
        finetuned_tied = []
        for path in request.model_dirs[1:]:
            with open_checkpoint(path, allow_pickle=allow_pickle) as finetuned:
                finetuned_tied.append(finetuned.tied_embeddings)
        # The engine writes lm_head as the merged embedding: relax that shared matrix through the head.
        tied = writes_tied_head(base_tied, finetuned_tied, cfg.model_pair.tied_head)
        through_head = tied and cfg.merge.tied_embedding == TiedEmbedding.head
        omega, relax = cfg.merge.omega, cfg.merge.relax
        factors = weight_factors(
            importance, shapes, omega, relax, tied_through=(EMBEDDING_NAME, LM_HEAD_NAME) if through_head else None
        )
        log.info(
            "AIM: %d weights relaxed (omega=%s, relax=%s) on top of %s%s",
            len(factors),
            omega,
            relax,
            cfg.merge.base_method,
            "; tied embedding relaxed through lm_head" if through_head else "",
        )

        def adjust(name: str) -> Adjustment:
            factor = factors.get(name)
            return Adjustment() if factor is None else Adjustment(delta_factor=factor)

        manifest = {
            "calibration": calibration_manifest(calibration),
            "aim": {
                "omega": omega,
                "base_method": cfg.merge.base_method,
                "relax": relax,
                "tied_embedding": cfg.merge.tied_embedding if tied else None,
                "tied_embedding_relaxed": EMBEDDING_NAME in factors,
                "capture_dtype": cfg.acm.dtype,
                "importance_cache_key": importance.metadata.get("cache_key"),
                "importance_statistics": importance.metadata.get("cache_dir"),
            },
        }
        return CoefficientPlan(request.method, adjust, manifest, calibration=calibration)


# The name every provider class had before the registry named each one (acm_exp.acm.provider.PROVIDERS).
Provider = AIMProvider
