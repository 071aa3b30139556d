# herd_test(NAME SOURCES... LIBS ... [LABELS ...]): a gtest binary beside the code it tests.
function(herd_test name)
  if(NOT HERD_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  herd_warnings(${name})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  gtest_discover_tests(${name}
    PROPERTIES LABELS "unit;${T_LABELS}"
               ENVIRONMENT "HERD_SOURCE_DIR=${CMAKE_SOURCE_DIR};HERD_PYTHON=${HERD_PYTHON}"
    DISCOVERY_TIMEOUT 60)
endfunction()
