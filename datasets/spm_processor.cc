// The one file that includes sentencepiece_processor.h (see spm_processor.h). No Abseil here.
#include "datasets/spm_processor.h"

#include <sentencepiece_processor.h>

#include <cstdint>
#include <string>
#include <utility>

namespace herd::datasets {

struct SpmProcessor::Impl {
  sentencepiece::SentencePieceProcessor with_prefix;     // the model as shipped
  sentencepiece::SentencePieceProcessor without_prefix;  // add_dummy_prefix off
};

namespace {

// ModelProto.self_test_data (sentencepiece_model.proto).
constexpr uint64_t kSelfTestDataField = 4;
// A second normalizer_spec (field 3, length 2) holding only add_dummy_prefix (its field 3, a
// varint) = false. Protobuf merges repeated occurrences of a singular message field, so appending
// it overrides the flag and keeps the rest of the spec.
constexpr char kNoDummyPrefix[] = {0x1a, 0x02, 0x18, 0x00};

bool ReadVarint(const std::string& s, size_t* pos, uint64_t* value) {
  *value = 0;
  for (int shift = 0; shift < 64 && *pos < s.size(); shift += 7) {
    const uint8_t byte = static_cast<uint8_t>(s[(*pos)++]);
    *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace

std::string WithoutDummyPrefix(const std::string& model_bytes, std::string* out) {
  out->clear();
  size_t pos = 0;
  while (pos < model_bytes.size()) {
    const size_t field_begin = pos;
    uint64_t tag = 0, length = 0;
    if (!ReadVarint(model_bytes, &pos, &tag)) return "truncated field tag";
    switch (tag & 7) {
      case 0:
        if (!ReadVarint(model_bytes, &pos, &length)) return "truncated varint";
        break;
      case 1:
        pos += 8;
        break;
      case 5:
        pos += 4;
        break;
      case 2:
        if (!ReadVarint(model_bytes, &pos, &length) || length > model_bytes.size() - pos) {
          return "truncated length-delimited field";
        }
        pos += length;
        break;
      default:
        return "unsupported wire type " + std::to_string(tag & 7);
    }
    if (pos > model_bytes.size()) return "truncated fixed-width field";
    if ((tag >> 3) != kSelfTestDataField) {
      out->append(model_bytes, field_begin, pos - field_begin);
    }
  }
  out->append(kNoDummyPrefix, sizeof(kNoDummyPrefix));
  return "";
}

SpmProcessor::SpmProcessor(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SpmProcessor::~SpmProcessor() = default;

std::string SpmProcessor::Load(const std::string& model_bytes, std::unique_ptr<SpmProcessor>* out) {
  auto impl = std::make_unique<Impl>();
  sentencepiece::util::Status s = impl->with_prefix.LoadFromSerializedProto(model_bytes);
  if (!s.ok()) return s.ToString();
  std::string patched;
  if (std::string error = WithoutDummyPrefix(model_bytes, &patched); !error.empty()) {
    return "cannot read the model proto: " + error;
  }
  s = impl->without_prefix.LoadFromSerializedProto(patched);
  if (!s.ok()) return "the model without its dummy prefix does not load: " + s.ToString();
  out->reset(new SpmProcessor(std::move(impl)));
  return "";
}

std::string SpmProcessor::Encode(std::string_view text, bool dummy_prefix,
                                 std::vector<int>* ids) const {
  ids->clear();
  const auto& sp = dummy_prefix ? impl_->with_prefix : impl_->without_prefix;
  // What Encode(text, ids) does, into a result kept per thread: Encode clears it, and protobuf
  // keeps cleared pieces (and their strings) for reuse, which spares several allocations per
  // token. A result grown past kKeptPieces is let go, so one huge text does not pin memory.
  constexpr size_t kKeptPieces = 1 << 16;
  thread_local sentencepiece::ImmutableSentencePieceText result;
  sentencepiece::util::Status s = sp.Encode(text, result.mutable_proto());
  if (s.ok()) {
    const size_t n = result.pieces_size();
    ids->reserve(n);
    for (size_t i = 0; i < n; ++i) ids->push_back(static_cast<int>(result.pieces(i).id()));
  }
  if (result.pieces_size() > kKeptPieces) result = sentencepiece::ImmutableSentencePieceText();
  return s.ok() ? "" : s.ToString();
}

std::string SpmProcessor::Decode(const std::vector<int>& ids, std::string* text) const {
  sentencepiece::util::Status s = impl_->with_prefix.Decode(ids, text);
  return s.ok() ? "" : s.ToString();
}

int SpmProcessor::piece_size() const { return impl_->with_prefix.GetPieceSize(); }
int SpmProcessor::bos_id() const { return impl_->with_prefix.bos_id(); }
int SpmProcessor::eos_id() const { return impl_->with_prefix.eos_id(); }
int SpmProcessor::unk_id() const { return impl_->with_prefix.unk_id(); }
int SpmProcessor::PieceToId(std::string_view piece) const {
  return impl_->with_prefix.PieceToId(piece);
}
std::string SpmProcessor::IdToPiece(int id) const { return impl_->with_prefix.IdToPiece(id); }
bool SpmProcessor::IsControl(int id) const { return impl_->with_prefix.IsControl(id); }
bool SpmProcessor::IsUnknown(int id) const { return impl_->with_prefix.IsUnknown(id); }

}  // namespace herd::datasets
