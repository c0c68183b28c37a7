/*
 * Copyright (c) 2010 The Regents. All rights reserved.
 *
 * Redistribution and use in source and binary forms, with or without
 * modification, are permitted provided that the following conditions are met.
 */
int main(void) { return 0; }
