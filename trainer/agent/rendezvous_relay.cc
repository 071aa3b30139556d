// Rendezvous requests of an engine, relayed to the coordinator.
#include "trainer/agent/rendezvous_relay.h"

#include <algorithm>

#include "common/strings.h"

namespace herd::agent {
namespace v1 = herd::v1;
using nlohmann::json;

namespace {

json ErrorBody(const absl::Status& s) {
  return {{"error", {{"code", absl::StatusCodeToString(s.code())}, {"message", std::string(s.message())}}}};
}

absl::Status Unreachable(const absl::Status& s) {
  return absl::UnavailableError(StrCat("the coordinator could not be reached: ", s.message()));
}

std::optional<json> Put(CoordinatorApi& api, const RendezvousRelayOptions& o, const json& m) {
  v1::PutRendezvousValueRequest request;
  request.set_trainer_id(o.trainer_id);
  *request.mutable_ref() = o.ref;
  request.set_key(m["key"].get<std::string>());
  request.set_value(m["value"].get<std::string>());
  const absl::Time give_up = absl::Now() + o.put_retry_for;
  absl::Duration backoff = o.retry_backoff;
  while (true) {
    absl::Status s = api.PutRendezvousValue(request);
    if (s.ok()) return json{{"value", request.value()}};  // safe to retry: the same value is OK
    const bool retry = absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s);
    if (!retry || absl::Now() + backoff >= give_up) {
      if (absl::IsFailedPrecondition(s) && o.on_stale) o.on_stale(s);
      return ErrorBody(retry ? Unreachable(s) : s);
    }
    if (o.pause(backoff)) return std::nullopt;
    backoff = std::min(backoff * 2, absl::Seconds(10));
  }
}

std::optional<json> Get(CoordinatorApi& api, const RendezvousRelayOptions& o, const json& m) {
  const std::string key = m["key"].get<std::string>();
  const absl::Duration timeout = absl::Seconds(m["timeout_seconds"].get<double>());
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration backoff = o.retry_backoff;
  absl::Status last;
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return ErrorBody(absl::IsUnavailable(last)
                           ? Unreachable(last)
                           : absl::DeadlineExceededError(StrCat("no rank posted ", key, " within ", timeout)));
    }
    v1::GetRendezvousValueRequest request;
    request.set_trainer_id(o.trainer_id);
    *request.mutable_ref() = o.ref;
    request.set_key(key);
    const absl::Duration wait = std::min({left, o.wait_chunk, absl::Seconds(60)});
    const int64_t whole = absl::ToInt64Seconds(wait);
    request.mutable_wait()->set_seconds(whole);
    request.mutable_wait()->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(wait - absl::Seconds(whole))));
    absl::StatusOr<std::string> value = api.GetRendezvousValue(request);
    if (value.ok()) return json{{"value", *value}};
    last = value.status();
    if (absl::IsDeadlineExceeded(last)) {  // the wait passed: ask again at once
      if (o.pause(absl::ZeroDuration())) return std::nullopt;
      continue;
    }
    if (!absl::IsNotFound(last) && !absl::IsUnavailable(last)) {
      if (absl::IsFailedPrecondition(last) && o.on_stale) o.on_stale(last);
      return ErrorBody(last);
    }
    if (o.pause(std::min(backoff, left))) return std::nullopt;
    backoff = std::min(backoff * 2, absl::Seconds(10));
  }
}

}  // namespace

std::optional<json> RelayRendezvous(CoordinatorApi& api, const RendezvousRelayOptions& options, const json& request) {
  return request.value("type", "") == "rendezvous_put" ? Put(api, options, request) : Get(api, options, request);
}

}  // namespace herd::agent
