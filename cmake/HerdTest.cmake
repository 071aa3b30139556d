# herd_test(NAME SOURCES... LIBS ... [LABELS ...]): a gtest binary beside the code it tests.
function(herd_test name)
  if(NOT HERD_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  herd_warnings(${name})
  target_link_libraries(${name} PRIVATE ${T_LIBS} herd_testing GTest::gtest GTest::gtest_main)
  gtest_discover_tests(${name} TEST_LIST ${name}_TESTS DISCOVERY_TIMEOUT 60)
  # Not through gtest_discover_tests(PROPERTIES): it flattens list values, so ENVIRONMENT
  # "A=1;B=2" would set only A. A second include file, read by ctest after the discovered tests
  # exist, sets the properties with the lists intact.
  set(_labels unit ${T_LABELS})
  set(_props ${CMAKE_CURRENT_BINARY_DIR}/${name}_properties.cmake)
  file(WRITE ${_props}
    "if(DEFINED ${name}_TESTS)\n"
    "  set_tests_properties(\${${name}_TESTS} PROPERTIES\n"
    "    LABELS [==[${_labels}]==]\n"
    "    ENVIRONMENT [==[HERD_SOURCE_DIR=${CMAKE_SOURCE_DIR};HERD_PYTHON=${HERD_PYTHON}]==])\n"
    "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES ${_props})
endfunction()
