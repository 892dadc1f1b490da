"""MONAI Label app: multi-sequence brain-tumour segmentation and tumour-type classification.

A thin adapter: it parses ``--conf`` once into ``AppConfig``, checks that the installed
MONAI Label has what the app relies on, and asks ``brain_tumor_mri.server`` for the tasks;
all logic lives in the library.
"""

from __future__ import annotations

import logging

from monailabel.interfaces.app import MONAILabelApp

from brain_tumor_mri import __version__
from brain_tumor_mri.config import AppConfig
from brain_tumor_mri.server.compat import check_monailabel
from brain_tumor_mri.server.provenance import note_prediction
from brain_tumor_mri.server.routes import install_api
from brain_tumor_mri.server.security import install_security
from brain_tumor_mri.server.wiring import (
    ServerContext,
    build_datastore,
    build_infers,
    build_scoring,
    build_strategies,
    build_trainers,
    clean_interrupted_saves,
)

logger = logging.getLogger(__name__)


class BrainTumorApp(MONAILabelApp):
    """Serves segmentation/classification infer tasks, trainers and active learning."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        check_monailabel()
        self.cfg = AppConfig.from_conf(conf, app_dir, studies)
        self.ctx = ServerContext.create(self.cfg)
        logger.info("brain tumour app config: %s", self.cfg)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="Brain tumour MRI (multi-sequence)",
            description="Brain-tumour segmentation (necrotic core, edema, enhancing tumour) from T1, T1c, "
            "T2 and FLAIR, and tumour-type classification (glioma, meningioma, pituitary, no tumour)",
            version=__version__,
        )

    def server_mode(self, mode: bool) -> None:
        super().server_mode(mode)
        if mode:
            clean_interrupted_saves(self.cfg)  # the serving process only: task subprocesses share the folder
            install_api(self.ctx)  # validating routes, 4xx mapping, unsupported routes hidden (checks compat first)
            install_security(self.cfg)  # auth gate and roles, request-scoped temp folders, upload limits

    def infer(self, request, datastore=None):
        result = super().infer(request, datastore)
        note_prediction(self, request, result)  # label provenance: which model version a correction corrects
        return result

    def init_datastore(self):
        return build_datastore(self.cfg)

    def init_infers(self):
        return build_infers(self.ctx, self.datastore)

    def init_trainers(self):
        return build_trainers(self.ctx)

    def init_strategies(self):
        return build_strategies(self.ctx)

    def init_scoring_methods(self):
        return build_scoring(self.ctx)
