"""A feature head used as the detector of ``explain IMG --detector HEAD_DIR``.

P(fake) comes from the saved scikit-learn head, exactly as in ``eval``. The box:
for a differentiable head (logistic, LDA, linear SVM, MLP) the head's fake logit
is rebuilt in torch (:func:`heads.torch_logit`), its gradient is taken on the
tokens entering the backbone's last transformer block (or a CNN's last feature
map), and Grad-CAM's rule (channel weights = mean gradient over positions,
ReLU of the weighted sum) gives a map on the patch grid, reshaped and upsampled
to the image the backbone saw. For any other head there is no box, and the
notes say why.

The image handed on (``sr_image``) is the backbone's preprocessed input,
un-normalised: the box is drawn where the model looked. There is no
super-resolution step; ``--sr`` is ignored with a note.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from detectors.features.backbones import ConcatBackbone, load_backbone
from detectors.features.heads import torch_logit
from detectors.features.persist import is_head_dir, load_meta, load_pipeline
from detectors.gradcam import BOX_SIZE, box_around, draw_box, overlay, peak
from detectors.stage import DetectorResult
from explainer.pipeline import batched

# The CNN detector's box is 80 px on a 128 px image; keep the same share of the image.
BOX_FRACTION = BOX_SIZE / 128


def is_feature_head(path: str | Path | None) -> bool:
    return path is not None and is_head_dir(path)


class FeatureDetectorStage:
    def __init__(self, head_dir: str | Path, device: str = "cpu", threshold: float = 0.5, batch_size: int = 16,
                 sr: str | Path | None = None) -> None:
        self.head_dir = Path(head_dir)
        self.meta = load_meta(self.head_dir)
        self.pipe = load_pipeline(self.head_dir)
        self.backbone = load_backbone(self.meta["backbone"], device)
        self.classes: list[str] = self.meta["classes"]
        self.threshold, self.batch_size = threshold, batch_size
        self.base_notes = [f"detector: feature head {self.meta['head']} on {self.meta['backbone']} ({self.head_dir})"]
        if sr:
            self.base_notes.append("--sr ignored: a feature head looks at the backbone's input, not a super-resolved image")
        self.real_index = self.classes.index("real") if "real" in self.classes else 0
        self.logit, why = (None, "")
        if isinstance(self.backbone, ConcatBackbone):
            why = "no box: the features come from several concatenated backbones"
        else:
            fn, reason = torch_logit(self.pipe, positive=1) if self.classes == ["real", "fake"] else (None, "")
            if fn is None:
                why = f"no box: the {self.meta['head']} head is not differentiable ({reason})" if reason else (
                    f"no box: an attribution head ({', '.join(self.classes)}); P(fake) = 1 - P(real)")
            self.logit = fn
        self.no_box_note = why

    def run(self, images: list[Image.Image]) -> list[DetectorResult]:
        return [r for chunk in batched(images, self.batch_size) for r in self._run_batch(chunk)]

    def _run_batch(self, images: list[Image.Image]) -> list[DetectorResult]:
        n = len(images)
        t0 = time.perf_counter()
        if isinstance(self.backbone, ConcatBackbone):
            feats = self.backbone.features(images)
            views = self.backbone.members[0].view(self.backbone.members[0].preprocess(images))
            act = None
        else:
            pixels = self.backbone.preprocess(images).to(self.backbone.device)
            views = self.backbone.view(pixels)
            if self.logit is not None:
                f, act = self.backbone.embed_with_tokens(pixels)
            else:
                with torch.no_grad():
                    f, act = self.backbone.embed(pixels), None
            feats_t = f
            feats = f.detach().float().cpu().numpy()
        t_feat = time.perf_counter() - t0
        p = np.asarray(self.pipe.predict_proba(feats), dtype=np.float64)
        p_fake = 1.0 - p[:, self.real_index]
        t_head = time.perf_counter() - t0 - t_feat
        heat = None
        t1 = time.perf_counter()
        if self.logit is not None and act is not None:
            heat = self._cam(feats_t, act, views[0].size)
        t_cam = time.perf_counter() - t1
        out = []
        for k, view in enumerate(views):
            pk = float(p_fake[k])
            verdict = "fake" if pk >= self.threshold else "real"
            notes = self.base_notes + [f"classifier: {verdict} (P(fake) = {pk:.3f})"]
            if len(self.classes) > 2:
                top = int(np.argmax(p[k]))
                notes.append(f"most likely source: {self.classes[top]} ({p[k, top]:.3f})")
            box = ov = hm = None
            boxed = view
            if heat is None:
                notes.append(self.no_box_note or "no box: the backbone exposes no patch tokens or feature map")
            elif heat[1][k]:
                notes.append("the head's gradient found nothing pointing to 'fake'; no box")
            else:
                hm = heat[0][k]
                size = max(8, round(min(view.size) * BOX_FRACTION))
                box = box_around(peak(hm), view.size, size)
                boxed, ov = draw_box(view, box), overlay(view, hm)
            out.append(DetectorResult(view, "none", verdict, pk, box, boxed, hm, ov, notes,
                                      {"features": t_feat / n, "head": t_head / n, "gradcam": t_cam / n}))
        return out

    def _cam(self, feats: torch.Tensor, act, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        with torch.enable_grad():
            logits = self.logit(feats.float().cpu())
            (grad,) = torch.autograd.grad(logits.sum(), act.values)
        tokens = act.patch_tokens().detach().float()  # (B, N, C)
        g = act.patch_tokens(grad).float()
        alpha = g.mean(dim=1, keepdim=True)  # (B, 1, C)
        cam = F.relu((alpha * tokens).sum(dim=2))  # (B, N)
        gh, gw = act.grid
        cam = cam.reshape(-1, 1, gh, gw)
        cam = F.interpolate(cam, size=(size[1], size[0]), mode="bilinear", align_corners=False)[:, 0]
        lo = cam.amin(dim=(1, 2), keepdim=True)
        hi = cam.amax(dim=(1, 2), keepdim=True)
        span = hi - lo
        flat = (span <= 1e-12).reshape(-1)
        cam = torch.where(span > 1e-12, (cam - lo) / span.clamp_min(1e-12), torch.zeros_like(cam))
        return cam.cpu().numpy().astype(np.float32), flat.cpu().numpy()
