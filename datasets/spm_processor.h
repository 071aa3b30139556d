// libsentencepiece behind standard types. Debian's sentencepiece_processor.h declares
// `namespace absl { using std::string_view; }`, which clashes with Debian's Abseil (its own
// absl::string_view class), so spm_processor.cc is the only file that includes it and it includes
// no Abseil header; errors come back as strings and sentencepiece_tokenizer.cc turns them into
// absl::Status.
//
// Link rule: libsentencepiece carries its own protobuf-lite 3.14 and aborts at load time in a
// process that also loads Debian's libprotobuf (3.21), and libtorch exports protobuf too. Only
// herd_tokenizer_spm links it, and no binary with gRPC/protobuf or libtorch may link that library.
#ifndef HERD_DATASETS_SPM_PROCESSOR_H_
#define HERD_DATASETS_SPM_PROCESSOR_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace herd::datasets {

class SpmProcessor {
 public:
  // Parses a serialised ModelProto (the bytes of tokenizer.model). Returns "" and sets *out on
  // success, else a message saying why.
  static std::string Load(const std::string& model_bytes, std::unique_ptr<SpmProcessor>* out);

  ~SpmProcessor();
  SpmProcessor(const SpmProcessor&) = delete;
  SpmProcessor& operator=(const SpmProcessor&) = delete;

  // Encodes `text` with the model's normalisation. `dummy_prefix` = false encodes it as if the
  // model's add_dummy_prefix were off: the text continues earlier text, so no space is invented
  // in front of it. Control symbols (<s>, </s>) are never matched in text. Returns "" or an error.
  // Thread-safe (the work space it reuses is per thread).
  std::string Encode(std::string_view text, bool dummy_prefix, std::vector<int>* ids) const;
  std::string Decode(const std::vector<int>& ids, std::string* text) const;

  int piece_size() const;
  int bos_id() const;  // -1 when the model has none
  int eos_id() const;
  int unk_id() const;
  int PieceToId(std::string_view piece) const;  // unk_id() for an unknown piece
  std::string IdToPiece(int id) const;
  bool IsControl(int id) const;
  bool IsUnknown(int id) const;

 private:
  struct Impl;
  explicit SpmProcessor(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The ModelProto bytes with normalizer_spec.add_dummy_prefix set to false and self_test_data
// removed (its samples were made with the prefix). Done on the protobuf wire format because the
// generated sentencepiece_model.pb.h needs protobuf headers this process must not mix. Returns ""
// on success, else an error.
std::string WithoutDummyPrefix(const std::string& model_bytes, std::string* out);

}  // namespace herd::datasets

#endif  // HERD_DATASETS_SPM_PROCESSOR_H_
