// Byte-level BPE over tokenizer.json. Tokens are kept as the bytes they stand for (tokenizer.json
// spells them through GPT-2's bytes_to_unicode alphabet, undone at load), so encoding a piece is
// BPE over its bytes: start from one token per byte and merge adjacent pairs, lowest merge rank
// first and leftmost among equals, in exactly the order of Hugging Face's priority queue.
#include "datasets/bpe_tokenizer.h"

#include <algorithm>
#include <array>
#include <functional>
#include <queue>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/file_util.h"
#include "common/sha256.h"
#include "common/status.h"
#include "common/strings.h"
#include "datasets/bpe_pretokenizer.h"
#include "nlohmann/json.hpp"

namespace herd::datasets {
namespace {

using nlohmann::json;

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes for
// U+0100 + n in byte order. Returns the code point of each byte.
std::array<char32_t, 256> ByteToUnicode() {
  std::array<char32_t, 256> table{};
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    table[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return table;
}

// The bytes a tokenizer.json vocabulary key stands for; false when a character is not in the
// byte alphabet (such a token can be decoded but never produced from text).
bool KeyToBytes(std::string_view key, std::string* out) {
  static const std::unordered_map<char32_t, uint8_t> kInverse = [] {
    std::unordered_map<char32_t, uint8_t> m;
    const std::array<char32_t, 256> t = ByteToUnicode();
    for (int b = 0; b < 256; ++b) m[t[b]] = static_cast<uint8_t>(b);
    return m;
  }();
  out->clear();
  for (size_t i = 0; i < key.size();) {
    const uint8_t c = static_cast<uint8_t>(key[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > key.size()) return false;
    char32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<uint8_t>(key[i + k]) & 0x3f);
    auto it = kInverse.find(cp);
    if (it == kInverse.end()) return false;
    out->push_back(static_cast<char>(it->second));
    i += n;
  }
  return true;
}

// Rust's String::from_utf8_lossy, as Hugging Face's ByteLevel decoder applies it: each maximal
// prefix of a well-formed sequence that is cut short becomes one U+FFFD.
std::string Utf8Lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = b(i);
    if (c < 0x80) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    size_t n = 0;
    uint8_t lo = 0x80, hi = 0xbf;  // the allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 3;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    }
    size_t k = 1;
    if (n > 0) {
      for (; k < n && i + k < s.size(); ++k) {
        const uint8_t x = b(i + k);
        if (k == 1 ? (x < lo || x > hi) : (x & 0xc0) != 0x80) break;
      }
    }
    if (n > 0 && k == n) {
      out.append(s.substr(i, n));
    } else {
      out.append("\xef\xbf\xbd");
    }
    i += k;
  }
  return out;
}

struct Merge {
  int32_t rank;
  int32_t id;  // of the merged token
};

uint64_t PairKey(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct AddedToken {
  std::string content;
  int32_t id;
};

class BpeTokenizer final : public Tokenizer {
 public:
  struct Tables {
    std::unordered_map<std::string, int32_t> vocab;  // token bytes -> id
    std::unordered_map<uint64_t, Merge> merges;      // (left id, right id) -> merge
    std::array<int32_t, 256> byte_ids;               // -1: no token for the byte
    std::vector<std::string> pieces;                 // id -> bytes it decodes to
    std::vector<uint8_t> has_piece;                  // id -> whether the id exists
    std::vector<uint8_t> special;                    // id -> added special token
    std::vector<AddedToken> matched_added;           // non-special added tokens, matched in text
    bool ignore_merges = false;
  };

  BpeTokenizer(TokenizerInfo info, Tables t) : Tokenizer(std::move(info)), t_(std::move(t)) {}

  absl::StatusOr<std::vector<int32_t>> Encode(std::string_view text, TextStart) const override {
    std::vector<int32_t> ids;
    while (!text.empty()) {
      // Non-special added tokens are cut out first; the text between them is pre-tokenised.
      size_t at = text.size();
      const AddedToken* found = nullptr;
      for (const AddedToken& a : t_.matched_added) {
        const size_t p = text.find(a.content);
        if (p < at || (p == at && found != nullptr && a.content.size() > found->content.size())) {
          at = p;
          found = &a;
        }
      }
      for (std::string_view piece : SplitLlama3(text.substr(0, at))) {
        if (absl::Status s = EncodePiece(piece, &ids); !s.ok()) return s;
      }
      if (found == nullptr) break;
      ids.push_back(found->id);
      text.remove_prefix(at + found->content.size());
    }
    return ids;
  }

  absl::StatusOr<std::string> Decode(std::span<const int32_t> ids) const override {
    std::string bytes;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size() || !t_.has_piece[id]) {
        return absl::InvalidArgumentError(
            herd::StrCat("token id ", id, " is not in the vocabulary (", vocab_size(), " ids)"));
      }
      if (!t_.special[id]) bytes += t_.pieces[id];
    }
    return Utf8Lossy(bytes);
  }

  absl::StatusOr<std::string> TokenBytes(int32_t id) const override {
    if (id < 0 || id >= vocab_size() || !t_.has_piece[id]) {
      return absl::InvalidArgumentError(
          herd::StrCat("token id ", id, " is not in the vocabulary (", vocab_size(), " ids)"));
    }
    if (t_.special[id]) {
      for (const auto& [content, special_id] : info().special_tokens) {
        if (special_id == id) return content;
      }
    }
    return t_.pieces[id];
  }

 private:
  absl::Status EncodePiece(std::string_view piece, std::vector<int32_t>* out) const {
    if (t_.ignore_merges) {
      if (auto it = t_.vocab.find(std::string(piece)); it != t_.vocab.end()) {
        out->push_back(it->second);
        return absl::OkStatus();
      }
    }
    // Hugging Face's Word::merge_all, step for step: a queue of candidate merges ordered by
    // (rank, position), entries made stale by earlier merges skipped when popped. The symbols
    // form a linked list over the piece's bytes; a merged symbol keeps the left position.
    struct Symbol {
      int32_t id;
      int32_t prev, next;  // -1: none
      bool alive;
    };
    struct Candidate {
      int32_t rank, pos, id;
      bool operator>(const Candidate& o) const {
        return rank != o.rank ? rank > o.rank : pos > o.pos;
      }
    };
    std::vector<Symbol> syms;
    syms.reserve(piece.size());
    for (char c : piece) {
      const int32_t id = t_.byte_ids[static_cast<uint8_t>(c)];
      if (id < 0) {
        return absl::InvalidArgumentError(herd::StrCat(
            "tokenizing text: byte 0x", std::hex, static_cast<int>(static_cast<uint8_t>(c)),
            " has no token in the byte-level vocabulary"));
      }
      const int32_t k = static_cast<int32_t>(syms.size());
      syms.push_back({id, k - 1, k + 1 < static_cast<int32_t>(piece.size()) ? k + 1 : -1, true});
    }
    std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
    const auto push = [&](int32_t pos) {
      const int32_t next = syms[pos].next;
      if (next < 0) return;
      auto it = t_.merges.find(PairKey(syms[pos].id, syms[next].id));
      if (it != t_.merges.end()) queue.push({it->second.rank, pos, it->second.id});
    };
    for (int32_t k = 0; k + 1 < static_cast<int32_t>(syms.size()); ++k) push(k);
    while (!queue.empty()) {
      const Candidate top = queue.top();
      queue.pop();
      Symbol& left = syms[top.pos];
      if (!left.alive || left.next < 0) continue;
      const int32_t right = left.next;
      auto it = t_.merges.find(PairKey(left.id, syms[right].id));
      if (it == t_.merges.end() || it->second.id != top.id) continue;  // stale
      left.id = top.id;
      left.next = syms[right].next;
      syms[right].alive = false;
      if (left.next >= 0) syms[left.next].prev = top.pos;
      if (left.prev >= 0) push(left.prev);
      push(top.pos);
    }
    std::vector<int32_t> ids;
    for (const Symbol& sym : syms) {
      if (sym.alive) ids.push_back(sym.id);
    }
    out->insert(out->end(), ids.begin(), ids.end());
    return absl::OkStatus();
  }

  const Tables t_;
};

absl::Status Unsupported(const std::string& source, std::string_view what) {
  return absl::UnimplementedError(herd::StrCat(
      source, ": ", what, "; Herd implements only LLaMA-3 style byte-level BPE tokenizers"));
}

absl::Status Malformed(const std::string& source, std::string_view what) {
  return absl::InvalidArgumentError(herd::StrCat(source, ": ", what));
}

// The pre-tokenizer must be LLaMA 3's: Sequence[Split(pattern, Isolated), ByteLevel(no regex)].
absl::Status CheckPipeline(const json& j, const std::string& source) {
  if (auto it = j.find("normalizer"); it != j.end() && !it->is_null()) {
    return Unsupported(source, "a normalizer is set");
  }
  const json pre = j.value("pre_tokenizer", json());
  const json* steps = nullptr;
  if (pre.is_object() && pre.value("type", "") == "Sequence" && pre.contains("pretokenizers")) {
    steps = &pre["pretokenizers"];
  }
  if (steps == nullptr || !steps->is_array() || steps->size() != 2) {
    return Unsupported(source, "pre_tokenizer is not a Sequence of Split and ByteLevel");
  }
  const json& split = (*steps)[0];
  const json& byte_level = (*steps)[1];
  const json pattern = split.value("pattern", json());
  if (split.value("type", "") != "Split" || !pattern.is_object() || !pattern.contains("Regex") ||
      pattern["Regex"] != kLlama3SplitPattern || split.value("behavior", "") != "Isolated" ||
      split.value("invert", false)) {
    return Unsupported(source,
                       "pre_tokenizer's Split is not LLaMA 3's regex with behavior Isolated");
  }
  if (byte_level.value("type", "") != "ByteLevel" || byte_level.value("use_regex", true) ||
      byte_level.value("add_prefix_space", false)) {
    return Unsupported(source,
                       "pre_tokenizer's second step is not ByteLevel(use_regex: false, "
                       "add_prefix_space: false)");
  }
  const json model = j.value("model", json());
  if (!model.is_object() || model.value("type", "") != "BPE") {
    return Unsupported(source, "model.type is not BPE");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (auto it = model.find(key); it != model.end() && !it->is_null() && *it != "") {
      return Unsupported(source, herd::StrCat("model.", key, " is set"));
    }
  }
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null() && *it != 0.0) {
    return Unsupported(source, "model.dropout is set");
  }
  return absl::OkStatus();
}

absl::StatusOr<int32_t> NamedId(const BpeTokenizer::Tables& t, const TokenizerInfo& info,
                                const std::string& name, std::string_view key,
                                const std::string& source) {
  if (name.empty()) return -1;
  if (auto it = info.special_tokens.find(name); it != info.special_tokens.end()) return it->second;
  for (const AddedToken& a : t.matched_added) {
    if (a.content == name) return a.id;
  }
  std::string bytes;
  if (KeyToBytes(name, &bytes)) {
    if (auto it = t.vocab.find(bytes); it != t.vocab.end()) return it->second;
  }
  return absl::InvalidArgumentError(herd::StrCat(
      source, ": tokenizer_config.json ", key, " '", name, "' is not a token of tokenizer.json"));
}

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> MakeBpeTokenizer(const std::string& tokenizer_json,
                                                            const TokenizerConfig& config,
                                                            const std::string& source) {
  const json j = json::parse(tokenizer_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Malformed(source, "not a JSON object");
  HERD_RETURN_IF_ERROR(CheckPipeline(j, source));
  const json& model = j["model"];
  const json vocab = model.value("vocab", json());
  const json merges = model.value("merges", json::array());
  if (!vocab.is_object()) return Malformed(source, "model.vocab is not an object");
  if (!merges.is_array()) return Malformed(source, "model.merges is not a list");
  const json added = j.value("added_tokens", json::array());
  if (!added.is_array()) return Malformed(source, "added_tokens is not a list");

  BpeTokenizer::Tables t;
  t.ignore_merges = model.value("ignore_merges", false);
  t.byte_ids.fill(-1);
  int32_t size = 0;
  std::vector<std::pair<int32_t, std::string>> pieces;  // (id, bytes)
  std::unordered_map<std::string, int32_t> key_ids;    // vocabulary key -> id, for merges
  for (const auto& [key, value] : vocab.items()) {
    if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
        value.get<int64_t>() > INT32_MAX) {
      return Malformed(source, herd::StrCat("model.vocab['", key, "'] is not a token id"));
    }
    const int32_t id = value.get<int32_t>();
    size = std::max(size, id + 1);
    key_ids[key] = id;
    std::string bytes;
    if (KeyToBytes(key, &bytes)) {
      t.vocab[bytes] = id;
      if (bytes.size() == 1) t.byte_ids[static_cast<uint8_t>(bytes[0])] = id;
    } else {
      bytes = key;  // outside the byte alphabet: decodes as written, never encoded
    }
    pieces.emplace_back(id, std::move(bytes));
  }
  TokenizerInfo info;
  for (const json& a : added) {
    if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() ||
        !a.contains("content") || !a["content"].is_string() || a["id"].get<int64_t>() < 0) {
      return Malformed(source, "an added_tokens entry lacks an integer id or a string content");
    }
    const int32_t id = a["id"].get<int32_t>();
    std::string content = a["content"].get<std::string>();
    size = std::max(size, id + 1);
    if (a.value("special", false)) {
      info.special_tokens[content] = id;
    } else if (!content.empty()) {
      t.matched_added.push_back({content, id});
    }
    // Hugging Face's ByteLevel decoder maps added tokens through the byte alphabet too, falling
    // back to their UTF-8 when a character is outside it.
    std::string bytes;
    if (!KeyToBytes(content, &bytes)) bytes = content;
    pieces.emplace_back(id, std::move(bytes));
  }
  t.pieces.resize(size);
  t.has_piece.assign(size, 0);
  t.special.assign(size, 0);
  for (auto& [id, bytes] : pieces) {
    t.pieces[id] = std::move(bytes);
    t.has_piece[id] = 1;
  }
  for (const auto& [content, id] : info.special_tokens) t.special[id] = 1;

  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) {
        return Malformed(source, herd::StrCat("model.merges[", rank, "] '", s, "' is not 'a b'"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return Malformed(source, herd::StrCat("model.merges[", rank, "] is not 'a b' or [a, b]"));
    }
    auto l = key_ids.find(left), r = key_ids.find(right), lr = key_ids.find(left + right);
    if (l == key_ids.end() || r == key_ids.end() || lr == key_ids.end()) {
      return Malformed(source, herd::StrCat("model.merges[", rank, "] (", left, " ", right,
                                            ") uses or makes a token not in model.vocab"));
    }
    // A pair listed twice takes its last rank: Hugging Face collects the merges into a map.
    t.merges.insert_or_assign(PairKey(l->second, r->second),
                              Merge{static_cast<int32_t>(rank), lr->second});
  }

  info.kind = "bpe";
  info.vocab_size = size;
  info.after_special = TextStart::kContinuation;
  info.chat_template = config.chat_template;
  info.model_sha256 = Sha256Hex(tokenizer_json);
  info.config_sha256 = config.sha256;
  HERD_ASSIGN_OR_RETURN(info.bos_id, NamedId(t, info, config.bos_token, "bos_token", source));
  HERD_ASSIGN_OR_RETURN(info.eos_id, NamedId(t, info, config.eos_token, "eos_token", source));
  return std::make_unique<BpeTokenizer>(std::move(info), std::move(t));
}

absl::StatusOr<std::unique_ptr<Tokenizer>> LoadBpeTokenizer(const std::string& model_dir) {
  const std::string path = model_dir + "/tokenizer.json";
  HERD_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  HERD_ASSIGN_OR_RETURN(TokenizerConfig config, ReadTokenizerConfig(model_dir));
  return MakeBpeTokenizer(text, config, path);
}

}  // namespace herd::datasets
