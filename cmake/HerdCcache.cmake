# ccache for every compile, keyed so that a fresh clone in another folder (CI) still hits:
# paths are made relative to the source root, the working directory is not hashed, and the
# sloppiness that precompiled headers need is set.
find_program(HERD_CCACHE ccache)
if(HERD_CCACHE)
  set(_herd_launcher
      ${CMAKE_COMMAND} -E env
      CCACHE_BASEDIR=${CMAKE_SOURCE_DIR}
      CCACHE_NOHASHDIR=1
      "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      ${HERD_CCACHE})
  set(CMAKE_C_COMPILER_LAUNCHER ${_herd_launcher})
  set(CMAKE_CXX_COMPILER_LAUNCHER ${_herd_launcher})
  message(STATUS "herd: compiling through ${HERD_CCACHE}")
endif()
