# Warnings for Herd's own targets (not for generated code or third-party headers).
function(herd_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)
endfunction()
