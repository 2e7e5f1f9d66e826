"""Embedding throughput: the whole embed step against the bare model forward on the same images."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

MODELS = {
    "efficientnet_lite0": 256,
    # Random weights: timing only (the hub is not reachable here).
    "timm:vit_base_patch16_224?pretrained=false": 192,
}


def _raw_seconds(model: str, uris: list[str], batch_size: int) -> float:
    """Seconds for the model forward alone over pre-decoded, pre-processed batches."""
    import torch

    from embviz.images import open_image
    from embviz.models import get_embedder

    emb = get_embedder(model)
    tensors = torch.stack([emb.preprocess(open_image(u)) for u in uris])
    batches = list(torch.split(tensors, batch_size))
    emb.embed_batch(batches[0][:2], ["pooled"])  # warm-up (allocations, lazy init)
    t0 = time.perf_counter()
    for b in batches:
        emb.embed_batch(b, ["pooled"])
    return time.perf_counter() - t0


def _predict_records(root: Path, model: str, batch_size: int, embed_ips: float, params) -> list:
    """``predict.images_per_second`` (the head alone, ``predict --source head``) and
    ``predict.with_embed_over_embed``: ``embed --predict`` (head on the embedding's passes)
    over ``embed`` alone, both timed here."""
    from embviz.pipeline.embed import embed
    from embviz.pipeline.predict import predict

    alone = predict(root, source="head", model=model, batch_size=batch_size, progress=False)
    plain = embed(root, model=model, batch_size=batch_size, progress=False, force=True)
    both = embed(root, model=model, batch_size=batch_size, progress=False, force=True, predict=True)
    embed_ips = (embed_ips + plain.images_per_second) / 2
    return [
        {
            "name": "predict.images_per_second",
            "params": {**params, "source": "head"},
            "value": alone.rows / alone.seconds,
            "unit": "img/s",
        },
        {
            "name": "predict.with_embed_over_embed",
            "params": params,
            "value": both.images_per_second / embed_ips,
            "unit": "ratio",
        },
    ]


def run(work: Path, *, quick: bool = False) -> list[dict]:
    """Return ``embed.pipeline_over_raw`` and throughput records for each model."""
    from embviz.dataset import open_dataset
    from embviz.pipeline.demo import write_mnist_folder
    from embviz.pipeline.embed import embed
    from embviz.pipeline.ingest import ingest

    records = []
    batch_size = 32
    warm_folder = write_mnist_folder(work / "mnist32", limit=32)
    for model, n in MODELS.items():
        n = 64 if quick else n
        folder = write_mnist_folder(work / f"mnist{n}", limit=n)
        root, warm = work / f"embed-ds-{n}", work / "embed-warm"
        for path, src in ((root, folder), (warm, warm_folder)):
            shutil.rmtree(path, ignore_errors=True)
            ingest(path, source=src, progress=False)
        uris = open_dataset(root).read_pandas("samples", columns=["uri"])["uri"].tolist()
        # Warm up once on a few images (model load, lazy init), then time a clean run between
        # two raw runs, so drift on this shared machine hits both sides of the ratio alike.
        embed(warm, model=model, batch_size=batch_size, progress=False)
        raw = _raw_seconds(model, uris, batch_size)
        result = embed(root, model=model, batch_size=batch_size, progress=False)
        raw = (raw + _raw_seconds(model, uris, batch_size)) / 2
        params = {"model": model.split("?")[0], "images": n, "batch": batch_size, "image_px": 224}
        raw_ips = n / raw
        if model == "efficientnet_lite0":  # ImageNet names: the head can predict
            records += _predict_records(root, model, batch_size, result.images_per_second, params)
        records += [
            {
                "name": "embed.pipeline_over_raw",
                "params": params,
                "value": result.images_per_second / raw_ips,
                "unit": "ratio",
            },
            {
                "name": "embed.images_per_second",
                "params": params,
                "value": result.images_per_second,
                "unit": "img/s",
            },
            {
                "name": "embed.raw_images_per_second",
                "params": params,
                "value": raw_ips,
                "unit": "img/s",
            },
        ]
    return records
