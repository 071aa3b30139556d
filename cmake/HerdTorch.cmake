# libtorch from the PyPI `torch` package (DESIGN.md §9), imported by hand rather than through
# find_package(Torch): the CPU build then links only libtorch_cpu and libc10 (no CUDA runtime on
# the development boxes), and the CUDA build adds libtorch_cuda/libc10_cuda explicitly.
# Target: herd::torch.
if(NOT HERD_TORCH_DIR)
  execute_process(
    COMMAND ${HERD_PYTHON} -c "import os, torch; print(os.path.dirname(torch.__file__))"
    OUTPUT_VARIABLE _herd_torch_dir OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE _herd_torch_rc)
  if(NOT _herd_torch_rc EQUAL 0)
    message(FATAL_ERROR "herd: torch not importable with ${HERD_PYTHON}; run scripts/setup.sh "
                        "or pass -DHERD_TORCH_DIR=/path/to/site-packages/torch")
  endif()
  set(HERD_TORCH_DIR ${_herd_torch_dir} CACHE PATH "The torch package directory")
endif()
message(STATUS "herd: libtorch from ${HERD_TORCH_DIR}")

add_library(herd_torch INTERFACE)
add_library(herd::torch ALIAS herd_torch)
# SYSTEM: torch's headers are not ours to warn about.
target_include_directories(herd_torch SYSTEM INTERFACE
  ${HERD_TORCH_DIR}/include ${HERD_TORCH_DIR}/include/torch/csrc/api/include)
target_compile_definitions(herd_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
set(_herd_torch_libs ${HERD_TORCH_DIR}/lib/libtorch_cpu.so ${HERD_TORCH_DIR}/lib/libc10.so)
if(HERD_WITH_CUDA)
  find_package(CUDAToolkit REQUIRED)
  list(APPEND _herd_torch_libs ${HERD_TORCH_DIR}/lib/libtorch_cuda.so
       ${HERD_TORCH_DIR}/lib/libc10_cuda.so CUDA::cudart)
  target_compile_definitions(herd_torch INTERFACE HERD_WITH_CUDA=1 USE_CUDA=1)
endif()
# --no-as-needed: libtorch_cuda registers its kernels from static initialisers, so it must be
# loaded even though nothing references its symbols directly.
target_link_libraries(herd_torch INTERFACE "-Wl,--no-as-needed" ${_herd_torch_libs} "-Wl,--as-needed")
target_link_options(herd_torch INTERFACE "-Wl,-rpath,${HERD_TORCH_DIR}/lib")

# NCCL: on the CPU boxes under /usr/local/cuda (links, never runs); on the GPU machine in the
# nvidia.nccl Python package.
set(HERD_NCCL_FOUND OFF)
if(HERD_WITH_NCCL)
  execute_process(
    COMMAND ${HERD_PYTHON} -c "import nvidia.nccl, os; print(nvidia.nccl.__path__[0])"
    OUTPUT_VARIABLE _herd_nccl_py OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  find_path(HERD_NCCL_INCLUDE nccl.h
    HINTS ${HERD_NCCL_ROOT}/include /usr/local/cuda/include ${_herd_nccl_py}/include)
  find_library(HERD_NCCL_LIBRARY NAMES nccl libnccl.so.2
    HINTS ${HERD_NCCL_ROOT}/lib /usr/local/cuda/lib64 ${_herd_nccl_py}/lib)
  if(HERD_NCCL_INCLUDE AND HERD_NCCL_LIBRARY)
    set(HERD_NCCL_FOUND ON)
    add_library(herd_nccl INTERFACE)
    target_include_directories(herd_nccl SYSTEM INTERFACE ${HERD_NCCL_INCLUDE})
    target_link_libraries(herd_nccl INTERFACE ${HERD_NCCL_LIBRARY})
    get_filename_component(_herd_nccl_dir ${HERD_NCCL_LIBRARY} DIRECTORY)
    target_link_options(herd_nccl INTERFACE "-Wl,-rpath,${_herd_nccl_dir}")
    target_compile_definitions(herd_nccl INTERFACE HERD_WITH_NCCL=1)
    message(STATUS "herd: NCCL ${HERD_NCCL_LIBRARY}")
  else()
    message(STATUS "herd: NCCL not found; the engine builds without it")
  endif()
endif()
