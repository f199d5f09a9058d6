# Warnings in our own code (vendor headers are included as SYSTEM). They are
# errors only where asked for: scripts/test and CI turn HM_WARNINGS_AS_ERRORS
# on, so a user's build never fails because a newer compiler grew a warning.
option(HM_WARNINGS_AS_ERRORS "Treat compiler warnings in Harmonics' own code as errors" OFF)

function(hm_target_warnings target)
  if(CMAKE_C_COMPILER_ID MATCHES "GNU|Clang")
    set(_werror "")
    if(HM_WARNINGS_AS_ERRORS)
      set(_werror -Werror)
    endif()
    # C only: a target may also hold CUDA sources (nvcc takes other flags).
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:C>:-Wall -Wextra -Wpedantic ${_werror}
      -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter>
      $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic ${_werror} -Wshadow>)
  endif()
endfunction()
