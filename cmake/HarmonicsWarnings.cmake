# Warnings are errors in our own code; vendor headers are included as SYSTEM.
function(hm_target_warnings target)
  if(CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
    # C only: a target may also hold CUDA sources (nvcc takes other flags).
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:C>:-Wall -Wextra -Wpedantic -Werror
      -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter>)
  endif()
endfunction()
