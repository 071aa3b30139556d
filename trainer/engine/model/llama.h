// LLaMA 1/2/3/3.1/3.2 with LoRA, in libtorch (DESIGN.md §5): RMSNorm, RoPE (default, linear and
// llama3 frequency scaling), grouped-query attention with an explicit head_dim, SwiGLU, tied or
// untied head. The base weights are frozen; only the LoRA A and B tensors require grad.
// Packed batches carry per-token document ids: each document attends only to itself.
#ifndef HERD_TRAINER_ENGINE_MODEL_LLAMA_H_
#define HERD_TRAINER_ENGINE_MODEL_LLAMA_H_

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainer/engine/model/attention.h"
#include "trainer/engine/model/autograd_ops.h"
#include "trainer/engine/model/llama_config.h"
#include "trainer/engine/model/lora_dropout.h"
#include "trainer/engine/model/tensor_names.h"

namespace herd::engine {

struct LoraOptions {
  int r = 16;
  double alpha = 32;
  double dropout = 0.0;
  bool rslora = false;           // scale alpha / sqrt(r) instead of alpha / r
  std::vector<Proj> targets;     // projections that get an adapter

  double scale() const;
};

// One batch on the model's device. B sequences of T tokens.
struct Batch {
  at::Tensor input_ids;     // [B, T] int64
  at::Tensor position_ids;  // [B, T] int64; restart at 0 for every packed document
  at::Tensor doc_ids;       // [B, T] int64 or undefined: undefined = one causal document per row
  at::Tensor targets;       // [B, T] int64, the next token of each position, -100 where not trained
  std::vector<int64_t> sequence_ids;  // global index of each row (LoRA dropout masks depend on it)
  // [N] int64 on the targets' device: the flat positions (b·T + t) whose target is not -100, in
  // order. Made where the targets are still on the host (TrainedPositions); undefined = Loss finds
  // them itself, which on a GPU waits for the whole forward to finish first.
  at::Tensor trained;
};

// The flat positions of `targets` ([B, T], any integer type, on the host) that are trained
// (target != -100), as int64 on `device`. No device synchronisation.
at::Tensor TrainedPositions(const at::Tensor& targets, at::Device device);

struct LoadOptions {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;       // base weights
  at::ScalarType lora_dtype = at::kFloat;  // LoRA A and B; float64 only for gradient checks
};

class LlamaModel {
 public:
  // Reads config.json and model.safetensors (or the shards of model.safetensors.index.json),
  // checking every tensor's presence, dtype and shape; errors name the file and the tensor.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Load(const std::string& model_dir,
                                                         const LoadOptions& options);
  // A model of `config`'s shape with seeded N(0, 0.02) weights made directly on the device
  // (norms 1), for benchmarks: throughput does not depend on the values.
  static absl::StatusOr<std::unique_ptr<LlamaModel>> Random(const LlamaConfig& config, const LoadOptions& options,
                                                           uint64_t seed);

  // Adds adapters to options.targets in every layer: A Kaiming-uniform (PEFT's init, seeded),
  // B zero. Replaces any earlier adapters.
  absl::Status EnableLora(const LoraOptions& options, uint64_t seed);

  // Final hidden states after the last norm. [B, T, hidden]. `dropout` may be null (no dropout,
  // as in eval). With `checkpoint_layers` (and grad mode on) autograd keeps only each decoder
  // layer's input and recomputes the layer in backward: same values and gradients, activation
  // memory of one layer instead of all. Throws c10::Error on bad input; callers at the component
  // edge convert it.
  at::Tensor Hidden(const Batch& batch, const DropoutKey* dropout, bool checkpoint_layers = false) const;
  // Full-vocabulary logits in float32. [B, T, vocab]. For tests and small evaluations only.
  at::Tensor Logits(const at::Tensor& hidden) const;

  struct LossSums {
    at::Tensor loss_sum;  // scalar float32 (float64 for a float64 model), Σ token cross-entropy
                          // over trained tokens (has grad)
    int64_t tokens = 0;  // trained tokens
    at::Tensor correct;  // scalar int64 on the device: trained tokens whose argmax is the target
                         // (a tensor, so that reading it waits only where the caller chooses)
  };
  // Head + cross-entropy over the trained positions only (targets != -100), `chunk_tokens` of them
  // at a time (ChunkedCrossEntropy): [tokens, vocab] logits never exist whole, in forward or
  // backward. hidden: [B, T, H] from Hidden(); targets: [B, T]; trained: Batch::trained, or
  // undefined to find the trained positions here (a device synchronisation mid-step).
  LossSums Loss(const at::Tensor& hidden, const at::Tensor& targets,
                int64_t chunk_tokens = kDefaultLossChunkTokens, const at::Tensor& trained = {}) const;

  struct Adapter {
    int layer;
    Proj proj;
    at::Tensor a;  // [r, in]  float32, requires grad
    at::Tensor b;  // [out, r] float32, requires grad
  };
  const std::vector<Adapter>& adapters() const { return adapters_; }
  // A then B of every adapter, layer by layer in kProjTable order: the flat-buffer order.
  std::vector<at::Tensor> LoraParameters() const;
  const LoraOptions& lora_options() const { return lora_; }

  const LlamaConfig& config() const { return config_; }
  // The device the weights live on (where batches must go).
  at::Device embed_device() const { return load_.device; }
  const std::string& model_dir() const { return model_dir_; }
  // A base tensor by its Hugging Face name (the merged exporter reads them).
  at::Tensor BaseTensor(const std::string& hf_name) const;
  // The dtype a BaseTensorSpecs tensor has in the checkpoint files (the merged exporter writes it
  // back so); throws std::out_of_range for other names.
  at::ScalarType StoredDtype(const std::string& hf_name) const { return stored_dtype_.at(hf_name); }

  // Runs the decoder layers and the final norm as plain autograd graphs of ATen ops (the form
  // transformers computes) instead of the lean nodes of model/decoder_ops.h: the reference for
  // tests and `herd-bench --reference`. Same values; far more activation memory.
  void set_reference_layers(bool on) { reference_layers_ = on; }
  // Keep each layer's SwiGLU output for the backward instead of making it again there (default on;
  // DecoderInputs::keep_mlp_activation). Off saves B·T·intermediate bytes a layer.
  void set_keep_mlp_activations(bool on) { keep_mlp_activations_ = on; }
  // Whether layer i's adapter on p rides in its padded frozen weight: q/k/v and gate/up with two or
  // more adapters of the group (DecoderWeights::w_pad), and down (w_rows); without LoRA dropout.
  bool AdapterFolds(int i, Proj p) const {
    return layers_.at(i).pad[static_cast<int>(p)].defined() || layers_.at(i).rows_pad[static_cast<int>(p)].defined();
  }
  // Folding on (default) or off, from now on (lays the weights out again): off only to measure what
  // it is worth (`herd-bench --no-fold`).
  void set_fold_adapters(bool on);

 private:
  struct Layer {
    at::Tensor input_norm, post_norm;   // [hidden]
    at::Tensor proj[kNumProj];          // [out, in] (a view of pad[k] where that is defined)
    int adapter[kNumProj];              // index into adapters_, or -1
    // Adapted q/k/v (and gate/up), two or more of them, without LoRA dropout: the frozen weight
    // stored as [W | B blocks] so the adapters fold into the frozen matmuls (DecoderWeights::w_pad).
    at::Tensor pad[kNumProj];           // [out, in + n·r], or undefined
    int64_t pad_col[kNumProj] = {};     // where this projection's B block begins in pad[k]
    // An adapted down without dropout: stored as [W ; A] [out + r, in] (DecoderWeights::w_rows).
    at::Tensor rows_pad[kNumProj];
    // Without LoRA dropout: each adapter's A and B in the weights' dtype, rewritten at the start of
    // every forward (PrepareLoraCopies), all in one launch on a GPU. Blocks of the padded weights
    // and of a group's stacked A's where those exist, buffers of their own elsewhere.
    at::Tensor a_c[kNumProj], b_c[kNumProj];
    at::Tensor a_cat[2];  // q/k/v's and gate/up's stacked A's [n·r, in], where two or more
    at::Tensor stack[2];  // q/k/v's and gate/up's padded weights, one below the other, where folded
  };
  // Writes every adapter's A and B into its compute copies (Layer::a_c, b_c).
  void PrepareLoraCopies() const;
  // Lays out layer l's adapters (EnableLora): the folded weights (pad, rows_pad, stack) and the
  // compute copies (a_c, b_c, a_cat). ClearAdapterLayout undoes it (weights dense again).
  void LayOutAdapters(Layer& l);
  static void ClearAdapterLayout(Layer& l);
  // What every decoder layer of one forward reads besides its input. Shared by the layers and
  // kept alive by the recompute of checkpointed ones.
  struct LayerInputs {
    at::Tensor cos, sin;                // [B, T, D] RoPE tables in the weights' dtype
    std::optional<at::Tensor> mask;     // [B, 1, T, T] bool, packed rows; none = plain causal
                                        // (reference layers only)
    AttentionLayout attention;          // the lean layers' view of the same
    at::Tensor dropout_keys;            // [layers, kNumProj, B, 2] int64 LoRA dropout row keys
                                        // (DropoutKeyTable); undefined = no dropout
  };
  LlamaModel() = default;
  // Takes the base tensors (by Hugging Face name) into the layer structure.
  void Assign(const std::map<std::string, at::Tensor>& tensors);
  // Decoder layer `i` on x [B, T, H]; deterministic (the recompute of checkpointing relies on it).
  at::Tensor DecoderLayer(int i, const at::Tensor& x, const LayerInputs& in) const;
  // The same layer as plain autograd over ATen ops (set_reference_layers).
  at::Tensor ReferenceDecoderLayer(int i, const at::Tensor& x, const LayerInputs& in) const;
  // x · Wᵀ plus the LoRA term. *lora_x caches x in the LoRA dtype across the projections of one x.
  at::Tensor Project(const Layer& layer, int layer_index, Proj proj, const at::Tensor& x, const LayerInputs& in,
                     at::Tensor* lora_x) const;
  // The LoRA A and B tensors of layer `i`.
  std::vector<at::Tensor> LayerLoraParameters(int i) const;
  at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& weight) const;
  at::Tensor Head() const { return config_.tie_word_embeddings ? embed_ : lm_head_; }

  LlamaConfig config_;
  std::string model_dir_;
  LoadOptions load_;
  at::Tensor embed_;      // [vocab, hidden]
  at::Tensor final_norm_; // [hidden]
  at::Tensor lm_head_;    // [vocab, hidden]; undefined when tied
  at::Tensor inv_freq_;   // [head_dim / 2] float32
  std::vector<Layer> layers_;
  std::map<std::string, at::ScalarType> stored_dtype_;  // HF name -> dtype in the checkpoint
  LoraOptions lora_;
  std::vector<Adapter> adapters_;
  bool reference_layers_ = false;
  bool keep_mlp_activations_ = true;
  bool fold_adapters_ = true;
};

// RoPE inverse frequencies exactly as transformers computes them. [head_dim / 2] float32.
at::Tensor RopeInverseFrequencies(const LlamaConfig& config);

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_MODEL_LLAMA_H_
