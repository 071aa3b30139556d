// `herd datasets inspect`: see datasets_inspect.h.
#include "cli/datasets_inspect.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <optional>

#include <grpcpp/grpcpp.h>

#include "cli/call.h"
#include "cli/exit_codes.h"
#include "common/file_util.h"
#include "common/rpc/rpc.h"
#include "common/status.h"
#include "common/strings.h"
#include "common/subprocess.h"
#include "datasets/example_dump.h"
#include "datasets/records.h"
#include "herd/v1/datasets.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace herd::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr absl::Duration kInspectDeadline = absl::Minutes(3);  // the coordinator allows 2
constexpr std::string_view kSeparator = "\xC2\xB7";            // "·" between tokens
constexpr std::string_view kOpen = "\xE2\x9F\xA6";             // "⟦" before a trained run
constexpr std::string_view kClose = "\xE2\x9F\xA7";            // "⟧" after it
constexpr std::string_view kNewline = "\xE2\x86\xB5";          // "↵" where a piece has "\n"
constexpr std::string_view kReset = "\x1b[0m";

// A piece safe to print: control characters (C0 but newline and tab, DEL, C1) as "<0xNN>".
std::string Printable(std::string_view piece) {
  std::string out;
  static constexpr char kHex[] = "0123456789ABCDEF";
  auto hex = [&](unsigned char c) {
    out += "<0x";
    out += kHex[c >> 4];
    out += kHex[c & 0xF];
    out += '>';
  };
  for (size_t i = 0; i < piece.size(); ++i) {
    const auto c = static_cast<unsigned char>(piece[i]);
    if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F) {
      hex(c);
    } else if (c == 0xC2 && i + 1 < piece.size() && static_cast<unsigned char>(piece[i + 1]) >= 0x80 &&
               static_cast<unsigned char>(piece[i + 1]) <= 0x9F) {
      hex(static_cast<unsigned char>(piece[++i]));  // U+0080..U+009F
    } else {
      out += piece[i];
    }
  }
  return out;
}

// The ANSI style of token `i`: alternating backgrounds show the boundaries; green when trained.
std::string Style(bool trained, size_t i) {
  const int bg = trained ? (i % 2 ? 28 : 22) : (i % 2 ? 238 : 236);
  const int fg = trained ? 15 : 250;
  return StrCat("\x1b[48;5;", bg, "m\x1b[38;5;", fg, "m");
}

// Appends `piece` with each newline shown as "↵" and then broken; in colour the style stops
// before the break (no background to the screen's edge) and starts again after it.
void AppendPiece(std::string_view piece, const std::string& style, std::string* out) {
  size_t start = 0;
  while (true) {
    const size_t nl = piece.find('\n', start);
    out->append(piece.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start));
    if (nl == std::string_view::npos) return;
    out->append(kNewline);
    if (!style.empty()) out->append(kReset);
    out->push_back('\n');
    if (!style.empty()) out->append(style);
    start = nl + 1;
  }
}

std::string FormatName(herd::v1::RecordFormat format) {
  if (format == herd::v1::RECORD_FORMAT_UNSPECIFIED) return "?";
  return std::string(datasets::FormatName(static_cast<datasets::RecordFormat>(static_cast<int>(format) - 1)));
}

std::string Percent(int64_t part, int64_t whole) {
  if (whole == 0) return "0%";
  const int64_t tenths = (part * 1000 + whole / 2) / whole;
  return StrCat(tenths / 10, ".", tenths % 10, "%");
}

// A program installed beside this one (herd-prepare).
std::string BesideUs(const std::string& name) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return (self.parent_path() / name).string();
}

int Usage(const std::string& message) {
  std::cerr << "herd: " << message << "\n";
  return kUsage;
}

int Print(const herd::v1::InspectDatasetResponse& inspection, bool json, bool color) {
  if (json) {
    std::cout << MessageToJson(inspection) << "\n";
  } else {
    std::cout << RenderInspection(inspection, {.color = color});
  }
  return kOk;
}

// FILE + a local model directory: herd-prepare as a child.
int InspectFile(const InspectOptions& o, bool json, bool color) {
  std::error_code ec;
  if (!fs::is_directory(o.model, ec)) {
    return Usage(StrCat("a local file is inspected with a local model directory (--model DIR holding "
                        "tokenizer.model or tokenizer.json); ", o.model,
                        " is not one. To use a model a trainer published, upload the file first "
                        "(herd datasets upload ", o.target, ") and inspect the dataset id it prints"));
  }
  const std::string program = o.herd_prepare.empty() ? BesideUs("herd-prepare") : o.herd_prepare;
  if (::access(program.c_str(), X_OK) != 0) {
    return Usage(StrCat("cannot run ", program, ", which tokenises local files; it is installed beside herd"));
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string scratch = StrCat(tmp != nullptr && *tmp ? tmp : "/tmp", "/herd-inspect-XXXXXX");
  if (::mkdtemp(scratch.data()) == nullptr) {
    std::cerr << "herd: cannot create a folder for herd-prepare: " << std::strerror(errno) << "\n";
    return kUsage;
  }
  const std::string dump = scratch + "/examples.jsonl";
  std::vector<std::string> argv = {program, "--data", o.target, "--model", o.model, "--dump-examples", dump,
                                   "--pieces", "--limit", StrCat(o.limit), "--format", o.format,
                                   "--chat-template", o.chat_template};
  if (o.train_on_inputs) argv.push_back("--train-on-inputs");
  if (o.max_seq_len > 0) argv.insert(argv.end(), {"--max-seq-len", StrCat(o.max_seq_len)});
  auto ran = RunSubprocess({.argv = argv, .timeout = absl::Minutes(10)});
  absl::StatusOr<std::string> text = absl::UnknownError("");
  if (ran.ok() && ran->ok()) text = ReadFile(dump);
  fs::remove_all(scratch, ec);
  if (!ran.ok()) {
    std::cerr << "herd: running " << program << ": " << ran.status().message() << "\n";
    return kUsage;
  }
  if (!ran->ok()) {
    std::string why = ran->stderr_text;
    while (!why.empty() && why.back() == '\n') why.pop_back();
    if (why.rfind("herd-prepare: ", 0) == 0) why = why.substr(14);
    std::cerr << "herd: " << (why.empty() ? StrCat("herd-prepare failed (exit ", ran->exit_code, ")") : why)
              << "\n";
    return ran->exit_code == kInvalid || ran->exit_code == kNotFound ? ran->exit_code : kUsage;
  }
  if (!text.ok()) {
    std::cerr << "herd: " << text.status().message() << "\n";
    return kUsage;
  }
  auto inspection = ParseExampleDump(*text);
  if (!inspection.ok()) {
    std::cerr << "herd: " << inspection.status().message() << "\n";
    return kUsage;
  }
  return Print(*inspection, json, color);
}

// ID + a published model's name: DatasetService.InspectDataset.
int InspectId(const InspectOptions& o, const ClientConfig& config, bool json, bool color) {
  std::error_code ec;
  if (o.model.find('/') != std::string::npos || fs::is_directory(o.model, ec)) {
    return Usage(StrCat("an uploaded dataset is inspected at the coordinator with a model a trainer published: "
                        "give its name (herd models list), not the directory ", o.model,
                        "; to use a local model directory, inspect the local file instead"));
  }
  herd::v1::InspectDatasetRequest request;
  request.set_dataset_id(o.target);
  request.set_model(o.model);
  request.set_limit(o.limit);
  if (o.format != "auto") {
    std::optional<datasets::RecordFormat> f = datasets::ParseFormatName(o.format);
    if (!f) return Usage(StrCat("unknown --format ", o.format));
    request.set_format(static_cast<herd::v1::RecordFormat>(static_cast<int>(*f) + 1));
  }
  if (o.chat_template == "llama2") request.set_chat_template(herd::v1::CHAT_TEMPLATE_LLAMA2);
  if (o.chat_template == "llama3") request.set_chat_template(herd::v1::CHAT_TEMPLATE_LLAMA3);
  request.set_train_on_inputs(o.train_on_inputs);
  request.set_max_seq_len(o.max_seq_len);

  auto channel = herd::rpc::MakeChannel({.target = config.endpoint, .ca_file = config.ca_file});
  if (!channel.ok()) return FailCall(nullptr, channel.status());
  auto stub = herd::v1::DatasetService::NewStub(*channel);
  grpc::ClientContext context;
  PrepareCall(config, &context, kInspectDeadline);
  herd::v1::InspectDatasetResponse response;
  absl::Status s = herd::rpc::FromGrpc(stub->InspectDataset(&context, request, &response));
  if (!s.ok()) return FailCall(&config, s);
  return Print(response, json, color);
}

}  // namespace

std::string RenderTokens(const std::vector<std::string>& pieces, const std::vector<bool>& trained,
                         const RenderOptions& options) {
  std::string out;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const bool t = i < trained.size() && trained[i];
    const std::string piece = Printable(pieces[i]);
    if (options.color) {
      const std::string style = Style(t, i);
      out += style;
      AppendPiece(piece, style, &out);
      out += kReset;
      continue;
    }
    if (i > 0) out += kSeparator;
    if (t && (i == 0 || !trained[i - 1])) out += kOpen;
    AppendPiece(piece, "", &out);
    if (t && (i + 1 == pieces.size() || i + 1 >= trained.size() || !trained[i + 1])) out += kClose;
  }
  return out;
}

std::string RenderInspection(const herd::v1::InspectDatasetResponse& in, const RenderOptions& options) {
  std::string out = StrCat("format: ", FormatName(in.format()));
  if (in.chat_template() == herd::v1::CHAT_TEMPLATE_LLAMA2) out += ", chat template: llama2";
  if (in.chat_template() == herd::v1::CHAT_TEMPLATE_LLAMA3) out += ", chat template: llama3";
  out += options.color ? "; trained tokens in green\n"
                       : StrCat("; tokens separated by ", kSeparator, ", trained tokens between ", kOpen, " and ",
                                kClose, "\n");
  int64_t tokens = 0, trained = 0, failed = 0;
  for (int e = 0; e < in.examples_size(); ++e) {
    const herd::v1::InspectedExample& ex = in.examples(e);
    out += StrCat("\n--- example ", e + 1, " (line ", ex.line(), ")");
    if (!ex.error().empty()) {
      ++failed;
      out += StrCat(": not usable: ", ex.error(), "\n");
      continue;
    }
    const int64_t n = ex.token_ids_size();
    const int64_t t = std::count(ex.trained().begin(), ex.trained().end(), true);
    tokens += n;
    trained += t;
    out += StrCat(": ", n, " tokens, ", t, " trained");
    if (ex.length() > n) out += StrCat(" (cut from ", ex.length(), " tokens by --max-seq-len)");
    out += "\n";
    out += RenderTokens({ex.pieces().begin(), ex.pieces().end()}, {ex.trained().begin(), ex.trained().end()},
                        options);
    out += "\n";
  }
  out += StrCat("\ntotal: ", in.examples_size(), in.examples_size() == 1 ? " example, " : " examples, ", tokens,
                " tokens, ", trained, " trained (", Percent(trained, tokens), ")");
  if (failed > 0) out += StrCat(", ", failed, " not usable");
  out += "\n";
  return out;
}

absl::StatusOr<herd::v1::InspectDatasetResponse> ParseExampleDump(std::string_view jsonl) {
  HERD_ASSIGN_OR_RETURN(datasets::ExampleDump dump, datasets::ParseExampleDump(jsonl));
  herd::v1::InspectDatasetResponse out;
  if (auto f = datasets::ParseFormatName(dump.format)) {
    out.set_format(static_cast<herd::v1::RecordFormat>(static_cast<int>(*f) + 1));
  }
  if (dump.chat_template == "llama2") out.set_chat_template(herd::v1::CHAT_TEMPLATE_LLAMA2);
  if (dump.chat_template == "llama3") out.set_chat_template(herd::v1::CHAT_TEMPLATE_LLAMA3);
  for (const datasets::InspectedExample& in : dump.examples) {
    herd::v1::InspectedExample* ex = out.add_examples();
    ex->set_line(in.line);
    ex->set_error(in.error);
    for (size_t i = 0; i < in.ids.size(); ++i) {
      ex->add_token_ids(in.ids[i]);
      ex->add_trained(in.trained[i]);
      ex->add_pieces(in.pieces[i]);
    }
    ex->set_length(in.length);
  }
  return out;
}

int InspectDataset(const InspectOptions& options,
                   const std::function<absl::StatusOr<ClientConfig>()>& config, bool json, bool color) {
  std::error_code ec;
  if (fs::is_regular_file(options.target, ec)) return InspectFile(options, json, color);
  if (options.target.rfind("ds_", 0) != 0) {
    std::cerr << "herd: " << options.target << ": no such file, and not a dataset id (ds_...)\n";
    return kNotFound;
  }
  auto client = config();
  if (!client.ok()) {
    std::cerr << "herd: " << client.status().message() << "\n";
    return kInvalid;
  }
  return InspectId(options, *client, json, color);
}

}  // namespace herd::cli
