// `herd-engine --protocol=1`: one assignment from hello to exit (engine_protocol.md §4).
#ifndef HERD_TRAINER_ENGINE_ENGINE_RUN_H_
#define HERD_TRAINER_ENGINE_ENGINE_RUN_H_

namespace herd::engine {

// Returns the process exit code (0 completed or cancelled, 1 error or watchdog).
int RunProtocol();

}  // namespace herd::engine

#endif  // HERD_TRAINER_ENGINE_ENGINE_RUN_H_
