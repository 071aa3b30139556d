# gRPC/protobuf code generation. herd_proto_library(NAME PROTOS...) compiles .proto files under
# proto/ into a static library with the message and service code.
if(NOT TARGET gRPC::grpc_cpp_plugin)
  find_program(HERD_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
else()
  set(HERD_GRPC_CPP_PLUGIN $<TARGET_FILE:gRPC::grpc_cpp_plugin>)
endif()
if(TARGET gRPC::grpc++)
  set(HERD_GRPCPP gRPC::grpc++)
  set(HERD_GRPCPP_REFLECTION gRPC::grpc++_reflection)
else()
  pkg_check_modules(HERD_GRPC REQUIRED IMPORTED_TARGET grpc++)
  set(HERD_GRPCPP PkgConfig::HERD_GRPC)
  set(HERD_GRPCPP_REFLECTION grpc++_reflection)
endif()

function(herd_proto_library name)
  set(_root ${CMAKE_SOURCE_DIR}/proto)
  set(_out ${CMAKE_BINARY_DIR}/gen)
  file(MAKE_DIRECTORY ${_out})
  set(_srcs)
  foreach(_proto ${ARGN})
    get_filename_component(_abs ${_proto} ABSOLUTE)
    file(RELATIVE_PATH _rel ${_root} ${_abs})
    string(REGEX REPLACE "\\.proto$" "" _stem ${_rel})
    set(_gen ${_out}/${_stem}.pb.cc ${_out}/${_stem}.pb.h
             ${_out}/${_stem}.grpc.pb.cc ${_out}/${_stem}.grpc.pb.h)
    add_custom_command(
      OUTPUT ${_gen}
      COMMAND protobuf::protoc
              --proto_path=${_root}
              --cpp_out=${_out}
              --grpc_out=${_out}
              --plugin=protoc-gen-grpc=${HERD_GRPC_CPP_PLUGIN}
              ${_abs}
      DEPENDS ${_abs} protobuf::protoc
      COMMENT "protoc ${_rel}"
      VERBATIM)
    list(APPEND _srcs ${_out}/${_stem}.pb.cc ${_out}/${_stem}.grpc.pb.cc)
  endforeach()
  add_library(${name} STATIC ${_srcs})
  target_include_directories(${name} PUBLIC ${_out})
  target_link_libraries(${name} PUBLIC protobuf::libprotobuf ${HERD_GRPCPP})
endfunction()
