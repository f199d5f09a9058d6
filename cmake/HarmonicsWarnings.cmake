# Warnings are errors in our own code; vendor headers are included as SYSTEM.
function(hm_target_warnings target)
  if(CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Werror
      -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter)
  endif()
endfunction()
