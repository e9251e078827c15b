# The TensorRT version from NvInferVersion.h, in the forms NVIDIA's headers use:
#   8.x, 10.0-10.13:  #define NV_TENSORRT_MAJOR 10 //!< TensorRT major version.   (number, trailing comment)
#   10.14 and later, 11.x:
#                     #define TRT_MAJOR_ENTERPRISE 10
#                     #define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE //!< TensorRT major version.
#
#   include(TensorRTVersion.cmake)
#   edgeresnext_tensorrt_version(<header> <out_var>)     # <out_var>: "10.3.0", or "" when the header says none
#
# Run as a script it prints the version (the tests use that on copies of real headers' version lines):
#   cmake -DHEADER=/usr/include/aarch64-linux-gnu/NvInferVersion.h -P TensorRTVersion.cmake

function(edgeresnext_tensorrt_version header out_var)
  set(_version "")
  if(EXISTS "${header}")
    file(STRINGS "${header}" _defines REGEX "^[ \t]*#[ \t]*define[ \t]+[A-Za-z_][A-Za-z0-9_]*[ \t]+[A-Za-z0-9_]+")
    set(_parts "")
    foreach(_part MAJOR MINOR PATCH)
      set(_value "")
      foreach(_line IN LISTS _defines)
        if(_line MATCHES "^[ \t]*#[ \t]*define[ \t]+NV_TENSORRT_${_part}[ \t]+([A-Za-z0-9_]+)")
          set(_value "${CMAKE_MATCH_1}")
          break()
        endif()
      endforeach()
      # One level of indirection: NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE, then TRT_MAJOR_ENTERPRISE 10.
      if(_value MATCHES "^[A-Za-z_]")
        set(_alias "${_value}")
        set(_value "")
        foreach(_line IN LISTS _defines)
          if(_line MATCHES "^[ \t]*#[ \t]*define[ \t]+${_alias}[ \t]+([0-9]+)")
            set(_value "${CMAKE_MATCH_1}")
            break()
          endif()
        endforeach()
      endif()
      if(NOT _value MATCHES "^[0-9]+$")
        set(_parts "")
        break()
      endif()
      list(APPEND _parts "${_value}")
    endforeach()
    if(_parts)
      list(JOIN _parts "." _version)
    endif()
  endif()
  set(${out_var} "${_version}" PARENT_SCOPE)
endfunction()

if(CMAKE_SCRIPT_MODE_FILE AND CMAKE_SCRIPT_MODE_FILE STREQUAL CMAKE_CURRENT_LIST_FILE)
  if(NOT HEADER)
    message(FATAL_ERROR "TensorRTVersion.cmake: give -DHEADER=<path to NvInferVersion.h>")
  endif()
  edgeresnext_tensorrt_version("${HEADER}" _found)
  if(NOT _found)
    message(FATAL_ERROR "${HEADER}: no TensorRT version found (NV_TENSORRT_MAJOR/MINOR/PATCH)")
  endif()
  execute_process(COMMAND "${CMAKE_COMMAND}" -E echo "${_found}")
endif()
