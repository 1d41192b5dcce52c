# Configures, builds and runs the consumer project in one mode.
#   cmake -DMODE=find|subdirectory -DSOURCE_DIR=... -DBUILD_DIR=...
#         -DWORK_DIR=... -DTORCH_DIR=... [-DPREFIX_PATH=a|b]
#         [-DLAUNCHER=ccache] -P check.cmake
# In find mode the resnet build in BUILD_DIR is first installed under
# WORK_DIR/prefix.

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGV}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}")
  endif()
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
set(args -DRESNET_CONSUMER_MODE=${MODE} -DTorch_DIR=${TORCH_DIR}
         -DCMAKE_BUILD_TYPE=Release)
if(LAUNCHER)
  list(APPEND args -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
endif()
string(REPLACE "|" ";" prefix_path "${PREFIX_PATH}")
if(MODE STREQUAL "find")
  run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${WORK_DIR}/prefix)
  list(PREPEND prefix_path ${WORK_DIR}/prefix)
endif()
# Handed over as the environment variable, a ':'-separated list.
string(REPLACE ";" ":" prefix_path "${prefix_path}")
if(MODE STREQUAL "subdirectory")
  list(APPEND args -DRESNET_SOURCE_DIR=${SOURCE_DIR})
endif()
run(${CMAKE_COMMAND} -E env CMAKE_PREFIX_PATH=${prefix_path} ${CMAKE_COMMAND}
    -S ${SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/build ${args})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/build)
run(${WORK_DIR}/build/consumer)
