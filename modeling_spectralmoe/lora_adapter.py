"""LoRA and DoRA baselines (Hu et al. 2021; Liu et al. 2024) through peft: low-rank updates of the frozen encoder's
attention projections, injected into the encoder itself."""

import importlib

from .frozen_baseline_adapter import LearnedQueryAdapter


class LoRAAdapter(LearnedQueryAdapter):
    r"""
    `W x + (alpha / r) B A dropout(x)` on the target projections of every layer (`A` kaiming-uniform, `B` zero: the
    model starts as the frozen one), built by peft's `inject_adapter_in_model` when the adapter is attached to the
    encoder. The injected `lora_*` tensors are this adapter's parameters (`encoder_parameter_names`), saved with it;
    the decoder gets a learned query table. peft is imported on attach only, so other model folders do not need it.

    Args:
        num_queries (`int`), query_dim (`int`): the learned query table.
        rank (`int`, defaults to 8), alpha (`float`, defaults to 8.0), dropout (`float`, defaults to 0.0): LoRA's r,
            alpha and input dropout (the frozen encoder runs in eval mode, so dropout stays off).
        target_modules (`list[str]`, *optional*): projections to adapt; defaults to the encoder family's
            (`lora_target_modules`: q and v for DINOv3, the fused qkv for DOFA).
        use_dora (`bool`, defaults to `False`): weight-decomposed LoRA (DoRA).
    """

    def __init__(self, num_queries: int, query_dim: int, rank: int = 8, alpha: float = 8.0, dropout: float = 0.0,
                 target_modules: list[str] | None = None, use_dora: bool = False):
        super().__init__(num_queries, query_dim)
        self.rank, self.alpha, self.dropout, self.use_dora = rank, alpha, dropout, use_dora
        self.target_modules = target_modules
        self.encoder = None  # set by attach; a plain attribute, so the encoder is not registered twice
        self.reset_parameters()

    @classmethod
    def from_config(cls, config) -> "LoRAAdapter":
        return cls(config.num_queries, config.decoder_hidden_dim, config.lora_rank, config.lora_alpha,
                   config.lora_dropout, config.lora_target_modules, use_dora=config.adapter_type == "dora")

    def attach(self, encoder) -> None:
        peft = importlib.import_module("peft")  # by name: remote-code loading of other methods must not need peft
        targets = list(self.target_modules or encoder.lora_target_modules)
        config = peft.LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                                 target_modules=targets, use_dora=self.use_dora)
        peft.inject_adapter_in_model(config, encoder.model)
        self.__dict__["encoder"] = encoder

    def encoder_parameter_names(self) -> list[str]:
        return [name for name, _ in self.encoder.model.named_parameters() if "lora_" in name]


__all__ = ["LoRAAdapter"]
