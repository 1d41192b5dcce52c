# CTest tests from a GoogleTest program, one per test suite: each test of a
# plain suite would otherwise start its own process, and starting one that
# loads LibTorch costs about a second, more than most of these tests take.
# The tests of a parameterized suite (each an architecture or a file, some
# taking tens of seconds) stay one CTest test each, so that CTest can spread
# them over the cores.
#
#   resnet_gtest_groups(TARGET [PROPERTIES name value ...])
#
# After each build of TARGET its --gtest_list_tests is read (as
# gtest_discover_tests does) and CTest picks the list up when it runs.
# This file is also the script that reads the list (cmake -P).

if(CMAKE_SCRIPT_MODE_FILE)
  # cmake -DEXECUTABLE=... -DOUT=... -P resnetGTestGroups.cmake
  cmake_minimum_required(VERSION 3.16)
  execute_process(
    COMMAND "${EXECUTABLE}" --gtest_list_tests
    OUTPUT_VARIABLE listing
    RESULT_VARIABLE rc
    TIMEOUT 120)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${EXECUTABLE} --gtest_list_tests failed (${rc}):\n${listing}")
  endif()
  string(REPLACE ";" "\\;" listing "${listing}")
  string(REPLACE "\n" ";" lines "${listing}")
  set(suites)
  set(singles)
  set(suite "")
  foreach(line IN LISTS lines)
    # "Suite." or "Prefix/Suite.  # TypeParam = ...", then "  Test" or
    # "  Test/0  # GetParam() = ...". Anything else (gtest_main's banner)
    # is not part of the list.
    if(line MATCHES "^([A-Za-z0-9_/]+)\\.( .*)?$")
      set(suite "${CMAKE_MATCH_1}")
    elseif(suite AND line MATCHES "^  ([A-Za-z0-9_/]+)( .*)?$")
      set(test "${CMAKE_MATCH_1}")
      if(suite MATCHES "^DISABLED_" OR test MATCHES "^DISABLED_")
        continue()
      endif()
      if(suite MATCHES "/")
        list(APPEND singles "${suite}.${test}")
      elseif(NOT suite IN_LIST suites)
        list(APPEND suites "${suite}")
      endif()
    endif()
  endforeach()
  list(LENGTH suites n_suites)
  list(LENGTH singles n_singles)
  if(n_suites EQUAL 0 AND n_singles EQUAL 0)
    message(FATAL_ERROR "${EXECUTABLE} lists no tests:\n${listing}")
  endif()
  file(WRITE "${OUT}" "set(resnet_suites [==[${suites}]==])\n"
                      "set(resnet_singles [==[${singles}]==])\n")
  return()
endif()

set(RESNET_GTEST_GROUPS_SCRIPT ${CMAKE_CURRENT_LIST_FILE})

function(resnet_gtest_groups target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "" "" "PROPERTIES")
  set(list_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_groups.list.cmake")
  set(ctest_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_groups.cmake")
  add_custom_command(
    TARGET ${target}
    POST_BUILD
    COMMAND ${CMAKE_COMMAND} -DEXECUTABLE=$<TARGET_FILE:${target}> -DOUT=${list_file}
            -P ${RESNET_GTEST_GROUPS_SCRIPT}
    BYPRODUCTS ${list_file}
    VERBATIM)
  set(properties "")
  foreach(item IN LISTS arg_PROPERTIES)
    string(APPEND properties " [==[${item}]==]")
  endforeach()
  if(properties)
    set(properties_call "set_tests_properties(\"\${name}\" PROPERTIES${properties})")
  endif()
  file(
    GENERATE
    OUTPUT ${ctest_file}
    CONTENT
      "if(EXISTS \"${list_file}\")
  include(\"${list_file}\")
  foreach(name IN LISTS resnet_suites)
    add_test(\"\${name}\" \"$<TARGET_FILE:${target}>\" \"--gtest_filter=\${name}.*\")
    ${properties_call}
  endforeach()
  foreach(name IN LISTS resnet_singles)
    add_test(\"\${name}\" \"$<TARGET_FILE:${target}>\" \"--gtest_filter=\${name}\")
    ${properties_call}
    set_tests_properties(\"\${name}\" PROPERTIES SKIP_REGULAR_EXPRESSION \"\\\\[  SKIPPED \\\\]\")
  endforeach()
else()
  add_test(${target}_NOT_BUILT ${target}_NOT_BUILT)
endif()
")
  set_property(
    DIRECTORY
    APPEND
    PROPERTY TEST_INCLUDE_FILES ${ctest_file})
endfunction()
