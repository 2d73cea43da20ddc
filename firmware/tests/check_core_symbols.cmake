# Fails if the core library refers to the heap, exceptions or RTTI: run as
#   cmake -DLIBRARY=libnmcm_core.a -DNM=nm -P check_core_symbols.cmake
# (Sanitizer builds add __asan_*/__ubsan_* references; those are not ours and do not match.)
execute_process(COMMAND ${NM} --undefined-only --demangle ${LIBRARY}
                OUTPUT_VARIABLE symbols RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  message(FATAL_ERROR "nm failed on ${LIBRARY}")
endif()
string(REGEX MATCH
       "U (malloc|calloc|realloc|free|operator new|operator delete|__cxa_[a-z_]+|__gxx_personality_v0|__dynamic_cast|typeinfo for|vtable for __cxxabiv1)[^a-zA-Z0-9_][^\n]*"
       hit "${symbols}")
if(hit)
  message(FATAL_ERROR "the core refers to '${hit}'")
endif()
message(STATUS "core: no heap, exception or RTTI symbols")
