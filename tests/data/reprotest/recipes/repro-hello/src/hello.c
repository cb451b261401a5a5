#include "greet.h"

int main(void)
{
	greet(__FILE__, __DATE__ " " __TIME__);
	return 0;
}
