"""The transformers ``Pipeline`` flow for pipelines whose ``_forward`` handles a whole batch of inputs at once.

``preprocess`` turns one input into plain Python data (texts, no tensors), the DataLoader gathers ``batch_size``
of them into a list, ``_forward`` makes one call to the work underneath (the PairRM engine, ``generate``) for
the list and returns one output per input, and ``postprocess`` formats each output. Lists return a list;
generators and datasets return an iterator that yields results in input order.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import Pipeline
from transformers.pipelines.pt_utils import PipelineChunkIterator, PipelineDataset, PipelineIterator

from ..utils.checks import check_int, check_positive_int
from ._inputs import CallForm

__all__ = ["InputBatchPipeline", "DEFAULT_BATCH_SIZE"]

#: Inputs per batch when neither the pipeline nor the call sets ``batch_size``. transformers defaults to 1
#: because padding mixed lengths can cost more than batching gains; the PairRM engine sorts pairs by length
#: across the whole batch, so larger batches only save work.
DEFAULT_BATCH_SIZE = 16


def _collate_list(items: list) -> list:
    """The DataLoader's collate: keep the preprocessed inputs of a batch as a list (``_forward`` batches them)."""
    return list(items)


class InputBatchPipeline(Pipeline):
    """A ``Pipeline`` whose ``_forward`` takes the list of preprocessed inputs of one batch.

    Subclasses implement ``_call_form`` (how the call's arguments split into inputs), ``_sanitize_parameters``,
    ``preprocess`` (one input), ``_forward`` (a list of preprocessed inputs → a list of outputs, one model call)
    and ``postprocess`` (one output). ``batch_size`` counts inputs per ``_forward`` call and ``num_workers`` the
    DataLoader workers that run ``preprocess``, as in transformers.
    """

    default_batch_size = DEFAULT_BATCH_SIZE

    def _call_form(self, inputs: Any, candidates: Any) -> CallForm:
        raise NotImplementedError

    def _check_call(self, preprocess_params: dict, forward_params: dict, postprocess_params: dict) -> None:
        """Checks that need the merged (construction + call) parameters; raise before any work."""

    def __call__(self, inputs: Any, candidates: Any = None, *, batch_size=None, num_workers=None, **kwargs) -> Any:
        """Run one input (returns its result), a list (returns a list) or a generator/dataset (returns an iterator)."""
        if batch_size is None:
            batch_size = self._batch_size if self._batch_size is not None else self.default_batch_size
        check_positive_int("batch_size", batch_size)
        if num_workers is None:
            num_workers = self._num_workers if self._num_workers is not None else 0
        check_int("num_workers", num_workers, minimum=0)
        pre, fwd, post = self._sanitize_parameters(**kwargs)
        # Construction parameters are defaults; the call's values win for this call only (nothing is stored).
        pre = {**self._preprocess_params, **pre}
        fwd = {**self._forward_params, **fwd}
        post = {**self._postprocess_params, **post}
        self._check_call(pre, fwd, post)
        form = self._call_form(inputs, candidates)
        if form.kind == "single":
            return self.run_single(form.data, pre, fwd, post)
        iterator = self.get_iterator(form.data, num_workers, batch_size, pre, fwd, post)
        return list(iterator) if form.kind == "list" else iterator

    def run_single(self, inputs, preprocess_params, forward_params, postprocess_params):
        """One input as a batch of one: preprocess, one ``_forward`` call, postprocess."""
        model_inputs = self.preprocess(inputs, **preprocess_params)
        return self.postprocess(self.forward([model_inputs], **forward_params)[0], **postprocess_params)

    def _forward_batch(self, batch: list, **forward_params) -> Any:
        return iter(self.forward(batch, **forward_params))

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ):
        """preprocess (in DataLoader workers) → batches of ``batch_size`` inputs → one ``_forward`` per batch →
        its outputs one by one, in input order → postprocess."""
        if hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__"):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            # Workers would each replay the whole iterator; transformers does the same.
            num_workers = min(num_workers, 1)
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
        if "TOKENIZERS_PARALLELISM" not in os.environ and num_workers > 0:
            os.environ["TOKENIZERS_PARALLELISM"] = "false"  # as transformers: forked workers and Rust threads
        from torch.utils.data import DataLoader

        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=_collate_list)
        # PipelineChunkIterator flattens: each batch's _forward yields the outputs of its inputs, in order.
        outputs = PipelineChunkIterator(loader, self._forward_batch, forward_params)
        return PipelineIterator(outputs, self.postprocess, postprocess_params)
