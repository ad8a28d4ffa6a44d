"""TRL's colocate weight sync, made to work on vLLM's CPU build.

TRL pushes every trained parameter into the colocated engine with the model's ``load_weights``, one at a time. On
CPU, vLLM repacks each linear layer's weight for its GEMM kernel once the checkpoint is loaded (oneDNN or AMX) and
leaves an empty placeholder parameter behind, so TRL's later ``load_weights`` fails (``'Parameter' object has no
attribute 'weight_loader'``), and if it did not, the kernel would keep using the packed copy of the old weights.
vLLM's own in-place reload (the model runner's ``reload_weights``) restores the checkpoint layout, loads the new
tensors and repacks layer by layer; on CPU, TRL's sync goes through it. GPUs keep TRL's sync unchanged.
"""

from __future__ import annotations


def route_colocate_sync_through_reload(vllm_generation) -> None:
    """On a CPU vLLM engine in colocate mode, replace TRL's ``sync_weights`` with vLLM's in-place reload.

    Args:
        vllm_generation (`trl.generation.vllm_generation.VLLMGeneration`): the trainer's generation backend.
    """
    from vllm.platforms import current_platform

    if vllm_generation.mode != "colocate" or not current_platform.is_cpu():
        return
    runner = vllm_generation.llm.llm_engine.model_executor.driver_worker.model_runner

    def sync_weights() -> None:
        # _iter_named_params is TRL's: it gathers ZeRO-3 shards and merges LoRA adapters while iterating.
        runner.reload_weights(weights_iterator=vllm_generation._iter_named_params())
        vllm_generation.llm.reset_prefix_cache()

    vllm_generation.sync_weights = sync_weights
